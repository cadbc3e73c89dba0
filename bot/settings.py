"""Configuration: the only module that reads the environment (and `.env`).

Every name in the contract is a field here. A bad value becomes one sentence that names the variable and
what to do (`SettingsError`), never a traceback.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.catalog import MILLI_PER_CNY, Catalog, CatalogError, load_catalog

DEFAULT_DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/api/v1"
DEFAULT_DISCORD_API_BASE = "https://discord.com/api/v10"
DEFAULT_DISCORD_GATEWAY = "wss://gateway.discord.gg/"


class SettingsError(Exception):
    """A configuration problem, phrased for the operator (one line per problem)."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- credentials and endpoints -------------------------------------------------------------------
    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    dashscope_api_key: SecretStr | None = Field(default=None, alias="DASHSCOPE_API_KEY")
    dashscope_extra_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, alias="KF2V_DASHSCOPE_EXTRA_API_KEYS"
    )
    dashscope_base_url: str = Field(default=DEFAULT_DASHSCOPE_BASE_URL, alias="DASHSCOPE_BASE_URL")
    dashscope_region: Literal["beijing", "singapore"] | None = Field(default=None, alias="KF2V_DASHSCOPE_REGION")
    discord_api_base: str = Field(default=DEFAULT_DISCORD_API_BASE, alias="KF2V_DISCORD_API_BASE")
    discord_gateway: str = Field(default=DEFAULT_DISCORD_GATEWAY, alias="KF2V_DISCORD_GATEWAY")
    dev_guild_id: int | None = Field(default=None, alias="KF2V_DEV_GUILD_ID")

    # --- storage -------------------------------------------------------------------------------------
    data_dir: Path = Field(default=Path("./data"), alias="KF2V_DATA_DIR")
    video_retention_days: float = Field(default=7, ge=0, alias="KF2V_VIDEO_RETENTION_DAYS")
    # Finished jobs' prompts, media references and requester ids are anonymised after this (issue 19); their
    # guild, model and costs stay for the budgets and reports. PRIVACY.md says what is kept and for how long.
    retention_days: float = Field(default=30, gt=0, alias="KF2V_RETENTION_DAYS")
    catalog_file: Path | None = Field(default=None, alias="KF2V_CATALOG_FILE")
    # postgresql://user:password@host/db selects PostgreSQL for the job store (several processes); unset =
    # the SQLite file in data_dir. repr=False: the URL may carry a password (bot.jobs.db.redact_url for logs).
    database_url: str | None = Field(default=None, alias="KF2V_DATABASE_URL", repr=False)

    # --- processes (discord.py sharding; unset = one process, every shard, as AutoShardedClient) -------
    shard_count: int | None = Field(default=None, ge=1, alias="KF2V_SHARD_COUNT")
    shard_ids: Annotated[list[int], NoDecode] = Field(default_factory=list, alias="KF2V_SHARD_IDS")

    # --- people --------------------------------------------------------------------------------------
    owner_ids: Annotated[list[int], NoDecode] = Field(default_factory=list, alias="KF2V_OWNER_IDS")
    # Guilds the bot serves; empty = every guild it is in. Elsewhere every command is refused, nothing spent.
    allowed_guilds: Annotated[list[int], NoDecode] = Field(default_factory=list, alias="KF2V_ALLOWED_GUILDS")

    # --- provider traffic ----------------------------------------------------------------------------
    max_concurrent_tasks: int = Field(default=2, ge=1, le=100, alias="KF2V_MAX_CONCURRENT_TASKS")
    submit_rps: float = Field(default=2, gt=0, le=100, alias="KF2V_SUBMIT_RPS")
    poll_min_interval: float = Field(default=1, gt=0, alias="KF2V_POLL_MIN_INTERVAL")
    poll_max_interval: float = Field(default=30, gt=0, alias="KF2V_POLL_MAX_INTERVAL")
    request_timeout: float = Field(default=30, gt=0, alias="KF2V_REQUEST_TIMEOUT")
    # Gaps derived from it are clamped into [KF2V_POLL_MIN_INTERVAL, KF2V_POLL_MAX_INTERVAL].
    poll_target_delay: float = Field(default=2.25, gt=0, alias="KF2V_POLL_TARGET_DELAY")
    # Result videos: only the provider's storage (*.aliyuncs.com), the exact origin of DASHSCOPE_BASE_URL
    # and these extra hosts are ever fetched (issue 10: a video_url is untrusted input).
    video_url_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="KF2V_VIDEO_URL_HOSTS")
    max_video_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, alias="KF2V_MAX_VIDEO_BYTES")

    # --- money ---------------------------------------------------------------------------------------
    default_daily_budget: Decimal = Field(default=Decimal(10), ge=0, alias="KF2V_DEFAULT_DAILY_BUDGET")
    default_monthly_budget: Decimal = Field(default=Decimal(100), ge=0, alias="KF2V_DEFAULT_MONTHLY_BUDGET")
    timezone: str = Field(default="UTC", alias="KF2V_TIMEZONE")

    # --- members -------------------------------------------------------------------------------------
    default_member_daily_videos: int = Field(default=20, ge=0, alias="KF2V_DEFAULT_MEMBER_DAILY_VIDEOS")
    default_user_queue_limit: int = Field(default=3, ge=1, alias="KF2V_DEFAULT_USER_QUEUE_LIMIT")
    user_commands_per_minute: int = Field(default=6, ge=1, alias="KF2V_USER_COMMANDS_PER_MINUTE")

    # --- images (the provider's documented bounds; older docs said 360-2000) -------------------------
    image_min_side: int = Field(default=240, ge=1, alias="KF2V_IMAGE_MIN_SIDE")
    image_max_side: int = Field(default=8000, ge=1, alias="KF2V_IMAGE_MAX_SIDE")
    image_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, alias="KF2V_IMAGE_MAX_BYTES")
    image_reencode_bytes: int = Field(default=7 * 1024 * 1024, ge=1024, alias="KF2V_IMAGE_REENCODE_BYTES")
    # Frames decoded/re-encoded at once (threads); what they may hold together is the memory budget below.
    image_workers: int = Field(default=2, ge=1, le=64, alias="KF2V_IMAGE_WORKERS")
    # MiB of pixels all decodes may hold at once; a picture needing more alone is refused (256 fits 512 MiB).
    image_memory_budget_mb: int = Field(default=256, ge=16, le=65536, alias="KF2V_IMAGE_MEMORY_BUDGET_MB")
    # MiB of attachments all requests may hold at once, downloaded and not yet handed over; a burst waits.
    attachment_memory_mb: int = Field(default=64, ge=16, le=65536, alias="KF2V_ATTACHMENT_MEMORY_MB")

    # --- operations ----------------------------------------------------------------------------------
    http_port: int = Field(default=0, ge=0, le=65535, alias="KF2V_HTTP_PORT")
    http_host: str = Field(default="127.0.0.1", alias="KF2V_HTTP_HOST")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", alias="KF2V_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", alias="KF2V_LOG_FORMAT")

    @field_validator(
        "owner_ids", "dashscope_extra_api_keys", "video_url_hosts", "allowed_guilds", "shard_ids", mode="before"
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("dashscope_base_url", "discord_api_base", "discord_gateway")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must be a full URL starting with http(s):// or ws(s)://")
        return value.rstrip("/") if value.startswith("http") else value

    # `.env.example` lists every optional setting with an empty value: copied as it is, that means "unset".
    @field_validator(
        "shard_count",
        "dev_guild_id",
        "dashscope_region",
        "catalog_file",
        "discord_token",
        "dashscope_api_key",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            # The value itself is never echoed: it may hold a password.
            raise ValueError("must be a postgresql://user:password@host:port/database URL, or unset for SQLite")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known IANA time zone (e.g. UTC, Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.poll_min_interval > self.poll_max_interval:
            raise ValueError("KF2V_POLL_MIN_INTERVAL must not be larger than KF2V_POLL_MAX_INTERVAL")
        if self.image_min_side > self.image_max_side:
            raise ValueError("KF2V_IMAGE_MIN_SIDE must not be larger than KF2V_IMAGE_MAX_SIDE")
        if self.shard_ids and self.shard_count is None:
            raise ValueError("KF2V_SHARD_IDS needs KF2V_SHARD_COUNT (the total number of shards of all processes)")
        if self.shard_count is not None and any(not 0 <= i < self.shard_count for i in self.shard_ids):
            raise ValueError(f"KF2V_SHARD_IDS must be between 0 and KF2V_SHARD_COUNT - 1 ({self.shard_count - 1})")
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("KF2V_SHARD_IDS lists a shard twice")
        return self

    # --- derived -------------------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "kf2v.sqlite3"

    @property
    def default_daily_budget_milli(self) -> int:
        return int(self.default_daily_budget * MILLI_PER_CNY)

    @property
    def default_monthly_budget_milli(self) -> int:
        return int(self.default_monthly_budget * MILLI_PER_CNY)

    def region(self, catalog: Catalog) -> str:
        """The region named by KF2V_DASHSCOPE_REGION, else recognised from the base URL, else Beijing."""
        if self.dashscope_region:
            return self.dashscope_region
        return catalog.region_for_base_url(self.dashscope_base_url) or "beijing"

    def api_keys(self) -> list[SecretStr]:
        """Every configured DashScope account, the main key first."""
        keys = [self.dashscope_api_key] if self.dashscope_api_key else []
        return keys + [k for k in self.dashscope_extra_api_keys if k.get_secret_value()]

    def require_run_credentials(self) -> None:
        if self.discord_token is None or not self.discord_token.get_secret_value().strip():
            raise SettingsError(
                "DISCORD_TOKEN is not set: put your bot token in .env or the environment (see .env.example)."
            )
        if not self.api_keys():
            raise SettingsError(
                "DASHSCOPE_API_KEY is not set: put your DashScope API key in .env or the environment "
                "(see .env.example), or point DASHSCOPE_BASE_URL at `kf2v-bot sandbox` with any key."
            )


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "configuration"
        field = Settings.model_fields.get(name)
        variable = field.alias if field is not None and field.alias else name
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{variable}: {message}. Fix it in .env or the environment (see .env.example).")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into a readable `SettingsError`."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    return settings


def load_catalog_for(settings: Settings) -> Catalog:
    try:
        return load_catalog(settings.catalog_file)
    except CatalogError as exc:
        raise SettingsError(f"KF2V_CATALOG_FILE: {exc}. Fix the file or unset the variable.") from None
