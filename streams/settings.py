"""The worker's configuration, read once from ``ENRICH_*`` environment variables.

``Settings`` is what a worker process reads (Kafka, models, limits, micro-batching, its pages);
the tools read ``ops.settings.ToolSettings``, which adds the recall API and the local stack's ports.
Settings are frozen: a process reads them once, and a variant is a new, validated object
(``updated``). This module and ``ops.settings`` are the only readers of the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enrich.schemas import MAX_MESSAGE_BYTES
from enrich.tagging.prior import TAG_PRIOR_FILE, TagPrior, candidate_count
from enrich.vectors.cf_adapter import CF_ADAPTER_FILE

# Settings that were renamed, by their old variable: a deployment that still sets one is told the new name.
RENAMED = {"ENRICH_MAX_TEXT_CHARS": "ENRICH_MODEL_TEXT_CHARS"}


class Settings(BaseSettings):
    # Frozen: a process reads its settings once; a variant is a new, validated object (``updated``).
    model_config = SettingsConfigDict(env_prefix="ENRICH_", extra="ignore", frozen=True)

    # Kafka
    broker: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
                                   description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str = Field("PLAIN", description="SASL mechanism when SASL is used")
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_ca_file: Path | None = Field(None, description="CA bundle for SSL / SASL_SSL (default: system CAs)")
    ssl_cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    ssl_key_file: Path | None = Field(None, description="client key for mutual TLS")
    group_id: str = Field("enrich", description="consumer group of the workers")
    topic_prefix: str = Field("", description="prefix for every topic name (e.g. 'staging.')")
    partitions: int = Field(4, ge=1, description="partitions for topics created by `enrich topics create`")
    replication_factor: int = Field(3, ge=1, description="replicas of every topic `enrich topics create` makes "
                                                         "(the local stack: 1)")
    min_insync_replicas: int = Field(2, ge=1, description="min.insync.replicas of those topics: with acks=all, a "
                                                          "write needs this many replicas (the local stack: 1)")
    retention_ms: int = Field(30 * 24 * 3600 * 1000, ge=-1, description="retention of the non-compacted topics "
                                                                        "(items.new: how far back a backfill can "
                                                                        "replay); -1 keeps them for ever")
    session_timeout_s: float = Field(10.0, description="consumer session timeout; short values rebalance faster")
    fetch_max_wait_ms: int = Field(100, ge=1, le=30_000,
                                   description="longest a fetch waits for data; Kafka answers as soon as data "
                                               "arrives, the bundled Tansu only when the wait is up")

    exactly_once: bool = Field(False, description="write each stage's outputs and its input offsets in one Kafka "
                                                  "transaction, so read_committed consumers of the outputs see each "
                                                  "item once (Apache Kafka; costs throughput, see "
                                                  "docs/reliability.md)")

    # Micro-batching
    batch_size: int = Field(16, ge=1, description="max events per micro-batch")
    batch_wait_s: float = Field(0.05, gt=0, description="max wait to fill a micro-batch")
    inflight_batches: int = Field(2, ge=1, le=8, description="micro-batches inferred and handed off at once")

    # Models and inference
    backend: str = Field("triton", pattern="^(triton|onnxruntime)$", description="'triton' or 'onnxruntime'")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint")
    triton_timeout_s: float = 30.0
    state_dir: Path = Field(Path(".enrich"), description="local models, codebook and logs")
    model_dir: Path | None = Field(None, description="exported models (default: <state_dir>/models)")
    model_preset: str = Field("small", pattern="^(small|multilingual|tiny)$",
                              description="what the local stack exports: 'small' (real MiniLM/EfficientNet weights, "
                                          "trained tagger and fusion gate; reads English), 'multilingual' (the "
                                          "same with USE multilingual v3 as the text tower; reads Chinese, English "
                                          "and 14 more languages) or 'tiny' (random Qwen-VL, tests)")
    small_tagger: str = Field("packed", pattern="^(packed|pairwise)$",
                              description="the small preset's tagger: 'packed' (sees the image, all candidates "
                                          "of an item in one pass) or 'pairwise' (text only, one row per tag)")
    codebook: Path | None = Field(None, description="semantic ID codebook (default: <state_dir>/codebook.npz)")
    cf_adapter: Path | None = Field(None, description="CF adapter artifact (default: <model_dir>/embedder/"
                                                      "cf_adapter.npz when the export shipped one)")
    tag_prior: str = Field("", description="neighbour-vote tag prior artifact: a path, 'off', or empty for "
                                           "<model_dir>/tagger/tag_prior.npz when the export shipped one")
    max_text_tokens: int = Field(256, ge=8)
    model_text_chars: int = Field(8000, ge=1, description="characters of an item's text the models read (the rest is "
                                  "cut off; text over 100,000 characters is refused as field_too_large)")
    max_images: int = Field(8, ge=0)
    max_image_bytes: int = Field(512 * 1024, ge=1, description="per image; keep items under the topic max message size")
    max_video_bytes: int = Field(900 * 1024, ge=1, description="per video (beyond: DLQ video_too_large)")
    video_frames: int = Field(4, ge=1, le=32, description="keyframes sampled per video")
    video_strategy: str = Field("uniform", pattern="^(uniform|keyframes)$",
                                description="'uniform' (evenly spaced in time) or 'keyframes' (spread over I-frames)")
    video_decode_s: float = Field(2.0, ge=0, description="decode budget per video; frames found by then are kept")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="per image or video frame, read from its header "
                                                                 "before decoding (beyond: DLQ image_pixel_budget)")
    max_item_pixels: int = Field(32 * 1024 * 1024, ge=1, description="an item's image headers summed (beyond: "
                                                                     "DLQ item_pixel_budget)")
    image_work_pixels: int = Field(1024 * 1024, ge=1024, description="images are reduced to at most this many "
                                                                     "pixels while decoded (less when the models "
                                                                     "use less)")
    max_batch_pixels: int = Field(8 * 1024 * 1024, ge=1, description="decoded pixels one model round holds; a "
                                                                      "batch beyond it is enriched in rounds")
    decode_isolation: bool = Field(True, description="decode media in child processes bounded in time and memory "
                                                     "(off: in the worker's own thread, unbounded)")
    decode_workers: int = Field(2, ge=1, le=16, description="media decoder processes (one per batch in flight)")
    decode_timeout_s: float = Field(5.0, gt=0, description="wall time to decode one item's media; the decoder is "
                                                           "killed beyond it (DLQ media_decode_timeout)")
    decode_memory_mb: int = Field(1024, ge=384, description="address-space limit of a decoder process (beyond: "
                                                            "DLQ media_memory_budget)")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=64 * 1024, description="largest record the broker takes; dead "
                                                                        "letters are cut to fit, checked against "
                                                                        "items.dlq's max.message.bytes at start")
    thumbnail_px: int = Field(96, ge=0, le=512, description="longer side of the WebP previews of an item's first "
                                                            "images on recall.neighbors; 0: none")
    thumbnail_bytes: int = Field(8 * 1024, ge=512, le=64 * 1024, description="most bytes of one preview (its "
                                                                             "quality steps down to fit, else none)")
    thumbnail_count: int = Field(4, ge=0, le=8, description="images or video frames previewed per item")
    caption_buckets: int = Field(1 << 18, ge=0, description="caption feature ids are hashed into this many "
                                                            "buckets; 0 turns caption features off")
    model_batch: int = Field(32, ge=1, description="max items per model call")
    seq_bucket: int = Field(1, ge=1, le=512, description="pad text-graph inputs to a multiple of this many tokens "
                                                         "so Triton's dynamic batcher can merge requests")
    candidate_tags: int | None = Field(None, ge=0, description="top-M vocabulary tags graded per item; unset: the "
                                       "count the shipped tag prior was fitted with (8 without a prior)")
    vocab_embed_chunk: int = Field(64, ge=1, description="new tags embedded per step: a batch of items embeds at "
                                                         "most this many before it is graded, and the vocabulary "
                                                         "feed embeds the rest in the background, so a flood of "
                                                         "new tags never holds items up")
    min_grade: int = Field(1, ge=0, le=2, description="keep tags graded at least this (2 strong, 1 weak)")
    retry_max_s: float = Field(30.0, description="longest backoff between retries of an unavailable backend")
    item_retries: int = Field(1, ge=0, le=5, description="retries of an item alone after the model server "
                                                         "rejected its batch, before it is dead-lettered")
    drain_s: float = Field(20.0, ge=0, description="on stop, how long batches in flight may finish (skipped "
                                                   "while the backend is down; unfinished batches are replayed)")

    # Worker
    web_port: int = Field(6066, description="worker HTTP port: /livez, /readyz, /metrics")
    web_faust_pages: bool = Field(False, description="also serve Faust's /router and /table pages (they expose "
                                                     "table contents; keep off outside debugging)")
    log_json: bool = False
    log_level: str = "info"
    lag_interval_s: float = Field(5.0, gt=0, description="how often consumer lag and paused partitions are measured")

    @model_validator(mode="after")
    def _durability(self) -> Settings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"ENRICH_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                             f"ENRICH_REPLICATION_FACTOR={self.replication_factor}: no write could succeed")
        return self

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.state_dir / "models"

    def updated(self, **changes: object) -> Settings:
        """These settings with ``changes``, validated like the environment's values (``model_copy`` is not)."""
        return type(self)(**(self.model_dump() | changes))

    def as_env(self) -> dict[str, str]:
        """The settings as the ``ENRICH_*`` variables that give them back: a child process's environment."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"ENRICH_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @classmethod
    def unknown_variables(cls, environ: Mapping[str, str]) -> list[str]:
        """One line per ``ENRICH_*`` variable in ``environ`` that this process does not read (a typo, a renamed
        setting, or one meant for another process), naming the new variable of a renamed one. Pydantic ignores
        them, so without this a misspelt setting silently keeps its default."""
        known = {f"ENRICH_{name.upper()}" for name in cls.model_fields}
        lines = []
        for var in sorted(v for v in environ if v.startswith("ENRICH_") and v not in known):
            new = RENAMED.get(var)
            lines.append(f"{var} is not a setting of this process and is ignored"
                         + (f": it was renamed {new}" if new else ""))
        return lines

    def cf_adapter_file(self) -> Path | None:
        """``ENRICH_CF_ADAPTER``, else the adapter the export shipped beside the embedder, if there is one (read
        from disk at each call: an export may ship or withdraw it)."""
        if self.cf_adapter is not None:
            return self.cf_adapter
        shipped = self.models_path / "embedder" / CF_ADAPTER_FILE
        return shipped if shipped.exists() else None

    def candidate_count(self) -> int:
        """Candidates graded per item, ``candidate_tags`` resolved against the shipped tag prior."""
        path = self.tag_prior_file()
        return candidate_count(self.candidate_tags, TagPrior.load(path) if path is not None else None)

    def tag_prior_file(self) -> Path | None:
        """``ENRICH_TAG_PRIOR`` (a path, or ``off``), else the prior the export shipped beside the tagger, if any
        (read from disk at each call)."""
        if self.tag_prior == "off":
            return None
        if self.tag_prior:
            return Path(self.tag_prior)
        shipped = self.models_path / "tagger" / TAG_PRIOR_FILE
        return shipped if shipped.exists() else None

    @property
    def codebook_path(self) -> Path:
        return self.codebook or self.state_dir / "codebook.npz"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def consumer_config(self, group_id: str) -> dict[str, str | int | bool]:
        """librdkafka settings of the tools' consumers (readers that never commit)."""
        return {**self.kafka_client_config(), "group.id": group_id, "enable.auto.commit": False,
                "fetch.wait.max.ms": self.fetch_max_wait_ms}

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by the admin, producer and consumer tools."""
        cfg = {"bootstrap.servers": self.broker, "security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            cfg |= {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password.get_secret_value()}
        if self.uses_tls:
            files = {"ssl.ca.location": self.ssl_ca_file, "ssl.certificate.location": self.ssl_cert_file,
                     "ssl.key.location": self.ssl_key_file}
            cfg |= {k: str(v) for k, v in files.items() if v is not None}
        return cfg
