"""The base of every wire model: strict about what it needs, tolerant of what it does not know."""

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """Unknown extra fields are ignored (forward compatibility) and never re-emitted, so a
    producer sends exactly the documented fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)
