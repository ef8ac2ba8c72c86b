"""Configuration from `HULEEDU_*` environment variables. No config file is required.

The mode follows from what is set: a Kafka bootstrap list selects Kafka, a Redis URL selects Redis,
an SMTP host selects SMTP, a content or RAS URL selects HTTP; otherwise the embedded adapters are
used. `bootstrap.py` makes that choice, and nothing else does.
"""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from huleedu.contracts.topics import Topics


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HULEEDU_", extra="ignore", frozen=True)

    # where things live
    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/huleedu.sqlite",
        description="postgresql+asyncpg://... or sqlite+aiosqlite:///path",
    )
    kafka_bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]")
    redis_url: str | None = Field(default=None, description="redis://host:port/db")
    topic_prefix: str = Field(default="huleedu", pattern=r"^[A-Za-z0-9._-]+$")
    redis_key_prefix: str = Field(default="", description="prepended to every Redis key (tests, tenants)")

    # Kafka client behaviour
    kafka_enable_idempotence: bool = Field(
        default=False, description="aiokafka idempotent producer; turn on for real Kafka"
    )
    kafka_fetch_max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    kafka_max_batch_records: int = Field(default=200, ge=1, le=10_000)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    kafka_partitions: int = Field(default=4, ge=1, le=1024, description="partitions of topics we create")
    kafka_replication_factor: int = Field(default=1, ge=1, description="replicas of topics we create")
    kafka_request_timeout_ms: int = Field(
        default=5_000, ge=100, description="longest wait for a broker's answer; bounds publish and ping"
    )
    kafka_client_id: str = "huleedu"

    # consumer retry policy
    consumer_retry_initial_seconds: float = Field(default=0.1, gt=0)
    consumer_retry_max_seconds: float = Field(default=10.0, gt=0)
    consumer_max_handler_attempts: int = Field(default=5, ge=1)

    # outbox relay
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_poll_seconds: float = Field(default=1.0, gt=0)
    relay_max_attempts: int = Field(default=10, ge=1)
    relay_backoff_initial_seconds: float = Field(default=0.5, gt=0)
    relay_backoff_max_seconds: float = Field(default=30.0, gt=0)

    # idempotency
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    idempotency_lease_seconds: int = Field(default=60, ge=1)

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(default=None, description="base URL used in links (emails)")

    # security
    internal_api_key: SecretStr = Field(default=SecretStr("dev-internal-key"))
    allowed_service_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "huleedu-bff",
            "dashboard",
            "websocket",
            "api-gateway",
            "huleedu-cli",
            "huleedu-spellcheck",
            "huleedu-cj",
        ]
    )
    jwt_secret: SecretStr = Field(default=SecretStr("dev-jwt-secret-change-me-0123456789"))
    jwt_audience: str = "huleedu-platform"
    jwt_issuer: str = "huleedu-identity-service"

    # email
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    mail_from: str = "HuleEdu Results <results@huleedu.local>"
    mail_dir: Path = Path("var/mail")
    smtp_validate_certs: bool = Field(default=True, description="verify the SMTP server's certificate")
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, description="longest wait for one SMTP step")
    email_poll_seconds: float = Field(default=1.0, gt=0, description="pause of the email worker when idle")
    email_max_attempts: int = Field(default=5, ge=1, description="sends before a job is marked failed")
    email_retry_initial_seconds: float = Field(default=30.0, gt=0)
    email_retry_max_seconds: float = Field(default=3600.0, gt=0)

    # WebSocket gateway
    ws_max_connections_per_user: int = Field(default=5, ge=1, description="across all gateway instances")
    # A reconnecting client recovers completely if it missed at most this many messages and was away
    # at most this long; older history is trimmed.
    ws_history_max_messages: int = Field(default=100, ge=1, description="per-user history length")
    ws_history_seconds: int = Field(default=24 * 3600, ge=1, description="per-user history age")
    ws_ping_seconds: float = Field(default=20.0, gt=0, description="server ping frame interval")
    ws_idle_timeout_seconds: float = Field(
        default=60.0, gt=0, description="close a socket whose client sent nothing for this long"
    )
    ws_compression: bool = Field(
        default=False,
        description="accept permessage-deflate when a browser offers it; off: frames are small and each "
        "compressed socket keeps zlib state of its own (see docs/performance.md)",
    )
    ws_send_buffer: int = Field(
        default=256, ge=1, description="frames queued for one socket before it counts as too slow"
    )

    # result aggregator
    ras_batch_deadline_seconds: int = Field(
        default=2 * 3600, ge=1, description="after this, missing results fail with a timeout"
    )
    ras_deadline_sweep_seconds: float = Field(default=30.0, gt=0)
    ras_cache_ttl_seconds: int = Field(default=300, ge=1)

    # dashboard (teacher read routes, a BFF over the RAS query API)
    ras_url: str | None = Field(
        default=None,
        description="base URL of the RAS query API; unset: the process's own app (huleedu up)",
    )
    ras_timeout_seconds: float = Field(default=10.0, gt=0, description="longest wait for RAS's answer")

    # assessment
    cj_judge: Literal["heuristic", "simulated", "llm"] = "heuristic"
    content_url: str | None = None
    cj_max_comparisons_per_essay: int = Field(
        default=20, ge=1, le=200, description="comparison budget per essay unless the request sets one"
    )
    cj_max_concurrent_judgements: int = Field(default=8, ge=1, description="judge calls in flight per run")
    cj_llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible API up to its version, e.g. https://api.openai.com/v1"
    )
    cj_llm_model: str | None = None
    cj_llm_api_key: SecretStr | None = None
    cj_llm_timeout_seconds: float = Field(default=60.0, gt=0, description="per HTTP attempt")
    cj_llm_max_concurrency: int = Field(default=4, ge=1, description="requests in flight to the model")
    cj_llm_requests_per_minute: float | None = Field(default=None, gt=0, description="unset: no spacing")

    # logging
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("allowed_service_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator(
        "kafka_bootstrap_servers", "smtp_host", "content_url", "ras_url", "cj_llm_base_url", "cj_llm_model"
    )
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
