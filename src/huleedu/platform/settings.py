"""Configuration from `HULEEDU_*` environment variables. No config file is required.

The mode follows from what is set: a Kafka bootstrap list selects Kafka, a Redis URL selects Redis,
an SMTP host selects SMTP, a content or RAS URL selects HTTP; otherwise the embedded adapters are
used. `bootstrap.py` makes that choice, and nothing else does.

A value that cannot work is refused here, naming the variable (the CLI exits with code 2), rather
than later as a traceback or, worse, silently: an empty secret, a service id with brackets in it, an
allow-list that lets nobody in, a broker address that is no `host:port`.
"""

import json
import re
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from huleedu.contracts.topics import Topics

DEV_INTERNAL_API_KEY = "dev-internal-key"
DEV_JWT_SECRET = "dev-jwt-secret-change-me-0123456789"
SERVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})")


class ModelPrice(BaseModel):
    """What a model's tokens cost, per million (in the currency the operator bills in)."""

    input_per_million: float = Field(ge=0.0)
    output_per_million: float = Field(ge=0.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HULEEDU_", extra="ignore", frozen=True)

    # First: the validators of the secrets read it.
    env: Literal["production", "development"] = Field(
        default="production",
        description="development: an empty secret or key falls back to its development value",
    )

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
    # How long the broker may hold a consumer's fetch when no record is waiting. Tansu answers
    # such a fetch only when the wait is over, not when a record arrives meanwhile, so a record
    # waits on each hop for the rest of the consumer's current fetch: on average half this wait,
    # at worst all of it (measured: 20 ms -> hop median 11.5 ms; 5 ms -> 4 ms), twice on the
    # completing event's path to a teacher's screen (-> RAS, -> gateway). Fewer milliseconds cost
    # idle CPU: one idle consumer took 2.8% of a core (client) and 4.6% (broker) at 20 ms, 6.5% and
    # 5.7% at 5 ms. A real Kafka broker answers at once when a record arrives: raise it there.
    kafka_fetch_max_wait_ms: int = Field(
        default=5, ge=0, le=10_000, description="longest wait of a consumer's fetch on the broker"
    )
    kafka_max_batch_records: int = Field(default=200, ge=1, le=10_000)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    kafka_leave_group_on_stop: bool = Field(
        default=False,
        description="send LeaveGroup on a graceful stop, handing partitions over at once; off by default: "
        "members leaving together wedge a Tansu group for good; turn it on for Apache Kafka",
    )
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
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    idempotency_lease_seconds: int = Field(default=60, ge=1)

    # retention (a background task of every process, see huleedu.operations.retention)
    # Processed event ids are the database half of idempotency: kept at least as long as the cache
    # half (the validator below), and by default twice Kafka's default topic retention (7 days), so
    # a consumer group rewound to the earliest offset still finds every id it could be sent again.
    retention_processed_events_seconds: int = Field(default=14 * 24 * 3600, ge=1)
    retention_outbox_seconds: int = Field(default=7 * 24 * 3600, ge=1, description="published rows")
    retention_email_seconds: int = Field(default=30 * 24 * 3600, ge=1, description="sent or failed jobs")
    retention_timeline_seconds: int = Field(
        default=30 * 24 * 3600, ge=1, description="events of batch timelines, by when RAS received them"
    )
    # Dead letters go only once their replay was published this long ago (never one not replayed).
    retention_dead_letters_seconds: int = Field(
        default=90 * 24 * 3600, ge=1, description="dead letters replayed, by when their last replay finished"
    )
    retention_interval_seconds: float = Field(default=300.0, gt=0, description="pause between passes")
    retention_batch_size: int = Field(default=1_000, ge=1, le=100_000, description="rows per delete")
    metrics_sample_seconds: float = Field(
        default=15.0, gt=0, description="refresh of the gauges read from the database (outbox, CJ jobs)"
    )

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(default=None, description="base URL used in links (emails)")

    # security
    internal_api_key: SecretStr = Field(default=SecretStr(DEV_INTERNAL_API_KEY))
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
    jwt_secret: SecretStr = Field(default=SecretStr(DEV_JWT_SECRET))
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
        default=20,
        ge=1,
        le=200,
        description="budget in essay-reads per essay (pairs: comparisons per essay) unless the request sets one",
    )
    cj_ranking_size: int = Field(
        default=6, ge=2, le=6, description="essays per judgement: 2 asks for pairs, 3..6 for rankings"
    )
    cj_strategy: Literal["random", "adaptive", "uncertain"] = Field(
        default="random",
        description="allocation: equal (random or adaptive partners) or uncertainty-driven",
    )
    cj_max_concurrent_judgements: int = Field(default=8, ge=1, description="judge calls in flight per run")
    cj_llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible API up to its version, e.g. https://api.openai.com/v1"
    )
    cj_llm_model: str | None = None
    cj_llm_api_key: SecretStr | None = None
    cj_llm_timeout_seconds: float = Field(default=60.0, gt=0, description="per HTTP attempt")
    cj_llm_max_concurrency: int = Field(default=4, ge=1, description="requests in flight to the model")
    cj_llm_requests_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="request starts per minute, all jobs of a process together; unset: no limit",
    )
    cj_llm_burst: int = Field(default=1, ge=1, description="request starts allowed at once within that rate")
    cj_llm_prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description='model -> {"input_per_million", "output_per_million"}, as JSON'
    )
    cj_llm_max_tokens_per_batch: int | None = Field(
        default=None, ge=1, description="a batch's budget of model tokens (in + out); unset: none"
    )
    cj_llm_max_cost_per_batch: float | None = Field(
        default=None, gt=0, description="a batch's budget of cost (by cj_llm_prices); unset: none"
    )
    cj_max_concurrent_jobs: int = Field(default=4, ge=1, description="CJ jobs judged at once per process")
    cj_job_lease_seconds: float = Field(
        default=10.0, ge=1.0, description="a dead worker's job is taken over this long after its last renewal"
    )
    cj_job_poll_seconds: float = Field(default=1.0, gt=0, description="how often due jobs are looked for")
    cj_job_max_attempts: int = Field(default=5, ge=1, description="failed attempts before a job fails")
    cj_progress_interval_seconds: float = Field(
        default=1.0,
        ge=0,
        description="least time between two progress events of a job (one per wave at most)",
    )
    cj_url: str | None = Field(
        default=None,
        description="base URL of the CJ internal API (the dashboard's evidence); unset: this process",
    )

    # logging
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("allowed_service_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Comma-separated, or the JSON list that pydantic-settings users write."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                listed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"starts like a JSON list but is not one ({exc.msg})") from exc
            if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
                raise ValueError("a JSON list of service ids must hold strings only")
            return [item.strip() for item in listed]
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("allowed_service_ids")
    @classmethod
    def _known_ids(cls, ids: list[str]) -> list[str]:
        if not ids:
            raise ValueError("names no service id, so no service could call an internal route")
        for service_id in ids:
            if not SERVICE_ID.fullmatch(service_id):
                raise ValueError(
                    f"{service_id!r} is not a service id (1-64 letters, digits, '.', '_', ':' or '-';"
                    " separate ids with commas, or write a JSON list)"
                )
        return list(dict.fromkeys(ids))

    @field_validator("internal_api_key", "jwt_secret")
    @classmethod
    def _secret_set(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if value.get_secret_value().strip():
            return value
        if info.data.get("env") == "development":
            default = DEV_INTERNAL_API_KEY if info.field_name == "internal_api_key" else DEV_JWT_SECRET
            return SecretStr(default)
        raise ValueError("must not be empty (HULEEDU_ENV=development uses the development value instead)")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if not value:
            return None
        servers = [server.strip() for server in value.split(",")]
        for server in servers:
            match = HOST_PORT.fullmatch(server)
            if match is None or not 1 <= int(match.group(3)) <= 65535:
                raise ValueError(f"{server!r} is not host:port (write host:port[,host:port])")
        return ",".join(servers)

    @field_validator("content_url", "ras_url", "cj_url", "cj_llm_base_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("mail_from")
    @classmethod
    def _address(cls, value: str) -> str:
        if "@" not in parseaddr(value)[1]:
            raise ValueError("must hold an email address, e.g. 'Results <results@example.org>'")
        return value

    @field_validator("kafka_heartbeat_interval_ms")
    @classmethod
    def _heartbeat_within_session(cls, value: int, info: ValidationInfo) -> int:
        session = info.data.get("kafka_session_timeout_ms")
        if isinstance(session, int) and value >= session:
            raise ValueError(f"must be shorter than HULEEDU_KAFKA_SESSION_TIMEOUT_MS ({session})")
        return value

    @field_validator("consumer_retry_max_seconds", "relay_backoff_max_seconds", "email_retry_max_seconds")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial_name = str(info.field_name).replace("_max_", "_initial_")
        initial = info.data.get(initial_name)
        if isinstance(initial, int | float) and value < initial:
            raise ValueError(f"must not be below HULEEDU_{initial_name.upper()} ({initial})")
        return value

    @field_validator("retention_processed_events_seconds")
    @classmethod
    def _keep_ids_while_the_cache_does(cls, value: int, info: ValidationInfo) -> int:
        ttl = info.data.get("idempotency_ttl_seconds")
        if ttl is not None and value < ttl:
            raise ValueError(
                f"must be at least HULEEDU_IDEMPOTENCY_TTL_SECONDS ({ttl}): a redelivered event is "
                "recognised by the processed-event log once the cache has forgotten it"
            )
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

    @field_validator("smtp_host", "cj_llm_model")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)
