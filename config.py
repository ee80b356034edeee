"""imgsearch settings: one pydantic-settings model, built by a factory and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Distance = Literal["cosine", "dot", "euclid", "manhattan"]


class QdrantSettings(BaseModel):
    """Vector index: embedded (empty url) or a Qdrant server/cluster."""

    url: str = ""
    api_key: SecretStr | None = None
    collection: str = "images"
    distance: Distance = "cosine"
    timeout_s: float = 10.0
    upsert_batch: int = Field(default=128, ge=1)
    # Embedded engine: "edge" = Qdrant Edge (Rust, HNSW, payload indexes); "local" =
    # qdrant-client's local mode (NumPy brute force). Edge moves a local-mode catalog in on open.
    engine: Literal["edge", "local"] = "edge"
    # Edge: build the HNSW graph in the background once this many points are new (0: default).
    hnsw_after: int = Field(default=0, ge=0)
    # Server: gRPC (port grpc_port) for points traffic. quantization "int8": both engines keep
    # an int8 copy of the float vectors that HNSW searches, rescored with the full vectors (PDQ's
    # +-1 vectors are always kept as bits, which is exact).
    prefer_grpc: bool = True
    grpc_port: int = Field(default=6334, ge=1, le=65535)
    quantization: Literal["none", "int8"] = "none"


class StorageSettings(BaseModel):
    """Image store: empty url = a folder under the data dir; `s3://bucket/prefix` for S3."""

    url: str = ""
    thumbnail_px: int = Field(default=256, ge=32)


class S3Settings(BaseModel):
    """S3 client options; credentials come from the standard AWS chain."""

    endpoint_url: str = ""
    region: str = ""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Server-side encryption of stored images: AES256 (S3-managed keys) on AWS; "aws:kms" with
    # sse_kms_key_id for a customer key; "none" for S3-compatible servers without it (MinIO
    # without a KMS refuses any SSE header).
    sse: Literal["AES256", "aws:kms", "none"] = "AES256"
    sse_kms_key_id: str = ""
    # The S3 endpoint as visitors' browsers reach it, when it differs from endpoint_url (compose:
    # MinIO published on 127.0.0.1:9000 while the app calls http://minio:9000); presigned links
    # are signed for it.
    browser_endpoint_url: str = ""
    # Result cards and the catalog grid load thumbnails straight from S3 through presigned
    # links (valid one hour, for that object only) instead of one GET through the app per card;
    # false keeps every image behind the app.
    direct_thumbnails: bool = True


class EmbedSettings(BaseModel):
    """Image encoder (ResNet50, 2048-d)."""

    weights: str = "imagenet"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=16, ge=1)
    # model threads (torch or ONNX Runtime); 0 = every usable core (see embed/encoder.py)
    threads: int = Field(default=0, ge=0)
    # auto: on a CPU int8 in ONNX Runtime when it passes its self-check on the shipped probe
    # photos (embed/int8.py), else bf16 autocast where the CPU has native bf16 (avx512_bf16,
    # AMX), else fp32; fp16 on CUDA. fp32 forces full precision; bf16 forces bf16 even where the
    # CPU only emulates it (slow); int8 forces int8 on the CPU (fp32 if its self-check fails).
    # SSCD follows it: int8 under auto and int8, fp32 otherwise.
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    # auto: ONNX Runtime where a model runs fp32 on the CPU (ResNet50 1.5x, SSCD 2x eager torch,
    # same vectors; see embed/onnx.py), torch elsewhere (bf16 autocast, CUDA); torch forces
    # torch; onnx requires a CPU fp32 or int8 plan for the encoder.
    runtime: Literal["auto", "torch", "onnx"] = "auto"


class TextSettings(BaseModel):
    """Text search: a CLIP model, fetched on first use into the cache (embed/clip.py)."""

    # On by default; false keeps text search off and fetches nothing.
    enabled: bool = True
    # A folder written by save_pretrained, or a Hugging Face hub id: a hub id is read from the
    # cache (ours, then Hugging Face's) and else fetched from base_url at `revision`.
    model: str = "openai/clip-vit-base-patch32"
    # The commit whose files are fetched (a commit, not a branch, so the files cannot change).
    revision: str = "d15b5f29721ca72dac15f8526b284be910de18be"
    # Where hub files are fetched from: {base_url}/{model}/resolve/{revision}/{file}; a mirror
    # with the same layout works.
    base_url: str = "https://huggingface.co"
    # {file name: SHA-256} a fetched file must match; files without one are accepted as
    # downloaded and their SHA-256 logged (no checksum is published for them, see README).
    sha256: dict[str, str] = Field(default_factory=dict)


class SearchSettings(BaseModel):
    """Query defaults for UI and CLI."""

    top_k: int = Field(default=12, ge=1, le=1000)
    threshold: float | None = None


class VerdictSettings(BaseModel):
    """The copy verdict: perceptual hash, copy-detection descriptor, geometric verification.

    Where each default comes from is in the README ("How the verdict decides").
    """

    # PDQ: Meta's published match threshold is a Hamming distance of 31 of 256 bits.
    pdq_max_distance: int = Field(default=31, ge=0, le=256)
    # PDQ quality 0..100; Meta's PDQ documentation discards hashes below 50 (flat images).
    pdq_min_quality: int = Field(default=50, ge=0, le=100)
    # Rows/columns whose pixels differ from the edge colour by at most this are trimmed.
    trim_tolerance: int = Field(default=12, ge=0, le=255)
    # SSCD TorchScript file: "" is the torch cache, fetched from sscd_base_url on first use
    # (pinned SHA-256); "off" disables; else a path.
    sscd_weights: str = ""
    sscd_base_url: str = "https://dl.fbaipublicfiles.com/sscd-copy-detection"
    # SSCD authors: cosine >= 0.75 is about 90% precision on DISC2021.
    sscd_min_score: float = Field(default=0.75, ge=-1.0, le=1.0)
    # How many nearest catalog images (by each descriptor) are verified geometrically.
    candidates: int = Field(default=8, ge=0, le=100)
    # Geometric verification (ORB + RANSAC, then the aligned overlap is compared).
    verify_side: int = Field(default=512, ge=128, le=2048)
    verify_features: int = Field(default=500, ge=100, le=10000)
    verify_min_inliers: int = Field(default=15, ge=3)
    verify_min_correlation: float = Field(default=0.85, ge=-1.0, le=1.0)
    verify_min_overlap: float = Field(default=0.25, ge=0.0, le=1.0)


class FetchSettings(BaseModel):
    """HTTP downloads for web sources."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    max_bytes: int = 25 * 1024 * 1024
    max_page_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # feeds and HTML pages
    total_timeout_s: float = Field(default=120.0, gt=0)  # whole download, against slow drips
    retries: int = Field(default=3, ge=0)
    backoff_s: float = 0.5
    per_host: int = Field(default=4, ge=1)
    concurrency: int = Field(default=16, ge=1)
    user_agent: str = "imgsearch/0.1 (+image search ingestion worker)"
    follow_links: bool = False
    max_pages: int = Field(default=50, ge=1)
    # Hosts ("host" or "host:port") that may resolve to private, loopback or link-local
    # addresses (intranet feeds); everything else must be a global address on port 80 or 443.
    allowed_private_hosts: list[str] = Field(default_factory=list)
    # Entries read from one feed, CSV, JSON Lines file or page; the rest is reported, not read.
    max_items_per_document: int = Field(default=2000, ge=1)


class IngestSettings(BaseModel):
    """Bounds of one ingestion run, so a hostile or stalled source cannot hold it forever."""

    # Wall-clock budget of one source and of a whole run; what is left waits for the next run.
    # A daily news feed of a few hundred images takes minutes here, so these only stop runaways.
    source_deadline_s: float = Field(default=1800.0, gt=0)
    run_deadline_s: float = Field(default=4 * 3600.0, gt=0)
    # Index writes that fail (server restarting, network blip) are tried again with exponential
    # backoff (backoff_s, 2x, 4x, ...) before the run gives up and is recorded as failed.
    index_retries: int = Field(default=4, ge=0)
    index_backoff_s: float = Field(default=1.0, ge=0)


class DecodeSettings(BaseModel):
    """Decoding untrusted images within a memory budget (uploads and ingestion)."""

    # Pixels that may be decoded (header size; a JPEG's size at its reduced decoding scale).
    # 40 MP is a 160 MB RGBA buffer, well under Pillow's 89.5 MP bomb limit and above any
    # camera photo a catalog needs (embed/decode.py DEFAULT_MAX_PIXELS).
    max_pixels: int = Field(default=40_000_000, ge=1)
    # Images decoded at once during ingestion (each up to max_pixels); 0 = one per two cores,
    # 1 to 4, so a 2-core host holds one full-size buffer at a time.
    concurrency: int = Field(default=0, ge=0)


class MetadataSettings(BaseModel):
    """The picture's own metadata and Content Credentials (embed/metadata.py, credentials.py)."""

    # Read EXIF, IPTC, XMP and C2PA from every upload and ingested file.
    enabled: bool = True
    # A PEM file of C2PA trust anchors (certificate authorities). A valid signature that chains
    # to one reads "trusted"; any other valid signature reads "valid". "" trusts none.
    trust_anchors: str = ""
    # An XMP packet larger than this is not parsed (Photoshop's edit history rarely passes 1 MiB).
    max_xmp_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)


# The source kinds, the one list of them. Each is built by the source class in ingest/sources
# that names it in its `kinds` (ingest.sources checks, on import, that every kind here has
# exactly one); "auto" picks folder, s3 or feed from the location.
SourceKind = Literal["auto", "folder", "s3", "feed", "rss", "csv", "jsonl", "html"]
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)


class SourceSettings(BaseModel):
    """One declared source the daily worker parses."""

    name: str
    kind: SourceKind = "auto"
    location: str
    options: dict[str, Any] = Field(default_factory=dict)


class WorkerSettings(BaseModel):
    """Daily ingestion schedule."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    jitter_s: int = Field(default=300, ge=0)
    misfire_grace_s: int = Field(default=3600, ge=1)
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_s: int = Field(default=3600, ge=0)
    in_app: Literal["auto", "yes", "no"] = "auto"


class AppSettings(BaseModel):
    """The web app's listening address (defaults of `imgsearch serve`)."""

    address: str = "127.0.0.1"
    port: int = Field(default=8501, ge=1, le=65535)
    # Largest upload (page and API) in MB; Streamlit's own default is 200.
    max_upload_mb: int = Field(default=50, ge=1, le=2000)


class ApiSettings(BaseModel):
    """The HTTP API under /api, served on the app's port by the same process."""

    # Bearer token that writes (add, delete) need when set; set it whenever the port is open.
    token: SecretStr | None = None


class AlertsSettings(BaseModel):
    """Alerts when a banked picture turns up: the webhooks they are sent to, and the retries."""

    # Webhook URLs (a JSON list); each gets every new alert, Slack-compatible (`text`) plus the
    # structured alert. Private or loopback hosts need IMGSEARCH_FETCH__ALLOWED_PRIVATE_HOSTS.
    webhooks: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=10.0, gt=0)
    # A failed delivery is retried after backoff_s, then twice as long each time (capped).
    backoff_s: float = Field(default=2.0, ge=0)
    max_backoff_s: float = Field(default=3600.0, ge=0)
    # How long a command or run keeps retrying before it leaves the rest to the next one.
    linger_s: float = Field(default=20.0, ge=0)


class AwsSettings(BaseModel):
    """Deployment to the user's own AWS account (ECR + EC2 + S3)."""

    region: str = ""
    account_id: str = ""
    repository: str = "imgsearch"
    image_tag: str = "latest"
    keep_images: int = Field(default=10, ge=1)
    bucket: str = ""
    # On by default: an overwritten or deleted image can be restored for noncurrent_days.
    bucket_versioning: bool = True
    noncurrent_days: int = Field(default=30, ge=1)
    instance_type: str = "t3.large"
    volume_gb: int = Field(default=50, ge=8)
    allowed_cidr: str = "0.0.0.0/32"
    key_name: str = ""
    app_port: int = 8501
    name: str = "imgsearch"


class Settings(BaseSettings):
    """All imgsearch settings (env prefix IMGSEARCH_, nested groups with __, `.env` file)."""

    model_config = SettingsConfigDict(
        env_prefix="IMGSEARCH_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./data")
    log_level: str = "INFO"
    qdrant: QdrantSettings = Field(default_factory=QdrantSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    text: TextSettings = Field(default_factory=TextSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    verdict: VerdictSettings = Field(default_factory=VerdictSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)
    sources: list[SourceSettings] = Field(default_factory=list)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    app: AppSettings = Field(default_factory=AppSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    aws: AwsSettings = Field(default_factory=AwsSettings)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def qdrant_path(self) -> Path:
        """Folder of the embedded index (used when qdrant.url is empty)."""
        return self.data_dir / "qdrant"

    @property
    def images_dir(self) -> Path:
        """Folder of the local image store (used when storage.url is empty)."""
        return self.data_dir / "images"

    @property
    def state_db(self) -> Path:
        """SQLite file of per-source state, quarantine and run reports."""
        return self.data_dir / "state.sqlite"

    @property
    def scheduler_db(self) -> Path:
        """SQLite file of the scheduler's job store."""
        return self.data_dir / "scheduler.sqlite"

    @property
    def embedded(self) -> bool:
        """True when the index is the embedded one-process local mode."""
        return not self.qdrant.url


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and `.env`, with explicit overrides on top."""
    return Settings(**overrides)
