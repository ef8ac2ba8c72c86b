"""Settings from HULEEDU_* variables: the embedded defaults, parsing, and readable refusals."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from huleedu.platform.settings import Settings


def _error(**env: str) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**env)  # type: ignore[arg-type]
    return str(caught.value)


def test_without_any_variable_the_embedded_mode_is_chosen() -> None:
    settings = Settings()

    assert settings.database_url.startswith("sqlite+aiosqlite://")
    assert settings.kafka_bootstrap_servers is None
    assert settings.redis_url is None
    assert settings.smtp_host is None
    assert settings.topics.batch_results_ready == "huleedu.batch.results.ready.v1"


def test_variables_of_the_environment_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_DATABASE_URL", "postgresql+asyncpg://app:pw@db:5432/huleedu")
    monkeypatch.setenv("HULEEDU_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("HULEEDU_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("HULEEDU_TOPIC_PREFIX", "acme")
    monkeypatch.setenv("HULEEDU_HTTP_PORT", "9000")
    monkeypatch.setenv("HULEEDU_ALLOWED_SERVICE_IDS", " bff, dashboard,,cli ")
    monkeypatch.setenv("HULEEDU_KAFKA_ENABLE_IDEMPOTENCE", "true")

    settings = Settings()

    assert settings.database_url == "postgresql+asyncpg://app:pw@db:5432/huleedu"
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.topics.spellcheck_completed == "acme.spellcheck.completed.v1"
    assert settings.http_port == 9000
    assert settings.allowed_service_ids == ["bff", "dashboard", "cli"]
    assert settings.kafka_enable_idempotence is True


def test_an_empty_url_means_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "SMTP_HOST", "CONTENT_URL"):
        monkeypatch.setenv(f"HULEEDU_{name}", "")

    settings = Settings()

    assert (
        settings.kafka_bootstrap_servers,
        settings.redis_url,
        settings.smtp_host,
        settings.content_url,
    ) == (
        None,
        None,
        None,
        None,
    )


def test_an_unsupported_database_is_refused_with_the_schemes_we_know() -> None:
    message = _error(database_url="mysql://db/huleedu")

    assert "database_url" in message
    assert "must start with postgresql+asyncpg:// or sqlite+aiosqlite://" in message


def test_a_redis_url_must_use_a_redis_scheme() -> None:
    assert "must start with redis://, rediss:// or unix://" in _error(redis_url="http://cache:6379")


def test_numbers_out_of_range_and_unknown_choices_are_refused() -> None:
    assert "http_port" in _error(http_port="70000")
    assert "less than or equal to 65535" in _error(http_port="70000")
    assert "log_format" in _error(log_format="xml")
    assert "cj_judge" in _error(cj_judge="oracle")
    assert "topic_prefix" in _error(topic_prefix="has space")


def test_secrets_do_not_show_in_the_representation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_JWT_SECRET", "very-secret-signing-key")
    monkeypatch.setenv("HULEEDU_INTERNAL_API_KEY", "very-secret-api-key")

    settings = Settings()

    assert "very-secret" not in repr(settings)
    assert settings.jwt_secret.get_secret_value() == "very-secret-signing-key"
    assert settings.internal_api_key.get_secret_value() == "very-secret-api-key"


def test_settings_cannot_be_changed_once_read() -> None:
    settings = Settings()

    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")

    undocumented = [
        f"HULEEDU_{name.upper()}"
        for name in Settings.model_fields
        if f"`HULEEDU_{name.upper()}`" not in readme
    ]

    assert undocumented == [], "add these to the configuration table of README.md"


# --- values that could only fail later are refused now, naming the variable ---


@pytest.mark.parametrize("name", ["jwt_secret", "internal_api_key"])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_is_refused_outside_development(name: str, value: str) -> None:
    message = _error(**{name: value})

    assert name in message
    assert "must not be empty" in message


@pytest.mark.parametrize("name", ["jwt_secret", "internal_api_key"])
def test_development_mode_gives_an_empty_secret_its_development_value(name: str) -> None:
    settings = Settings(env="development", **{name: ""})  # type: ignore[arg-type]

    assert getattr(settings, name).get_secret_value() == getattr(Settings(), name).get_secret_value()


def test_service_ids_may_be_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HULEEDU_ALLOWED_SERVICE_IDS", '["svc-a", "svc-b"]')

    assert Settings().allowed_service_ids == ["svc-a", "svc-b"]


@pytest.mark.parametrize(
    "value", [",", " , ", "[]", '["svc-a","svc-b"', '"svc-a"', "svc-a,svc b", "[1, 2]", "svc-a]"]
)
def test_service_ids_that_name_nobody_or_hold_brackets_quotes_or_spaces_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("HULEEDU_ALLOWED_SERVICE_IDS", value)

    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "allowed_service_ids" in str(caught.value)


@pytest.mark.parametrize(
    "value", ["not a host:port", "k1", "k1:0", "k1:70000", "k1:9092,,k2:9092", "http://k1:9092", "k 1:9092"]
)
def test_a_broker_list_that_is_not_host_port_pairs_is_refused(value: str) -> None:
    assert "kafka_bootstrap_servers" in _error(kafka_bootstrap_servers=value)


def test_broker_lists_of_names_addresses_and_bracketed_ipv6_are_taken() -> None:
    settings = Settings(kafka_bootstrap_servers="k1.example.org:9092, 10.0.0.2:9093,[::1]:9094")

    assert settings.kafka_bootstrap_servers == "k1.example.org:9092,10.0.0.2:9093,[::1]:9094"


@pytest.mark.parametrize("name", ["ras_url", "content_url", "public_url", "cj_llm_base_url"])
def test_a_service_url_must_be_http_with_a_host(name: str) -> None:
    assert name in _error(**{name: "ftp://x"})
    assert name in _error(**{name: "localhost:8000"})


def test_settings_that_contradict_each_other_are_refused() -> None:
    assert "kafka_heartbeat_interval_ms" in _error(
        kafka_session_timeout_ms="3000", kafka_heartbeat_interval_ms="3000"
    )
    assert "consumer_retry_max_seconds" in _error(
        consumer_retry_initial_seconds="5", consumer_retry_max_seconds="1"
    )
    assert "mail_from" in _error(mail_from="HuleEdu Results")
