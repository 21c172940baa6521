"""The tools' configuration: the worker's ``Settings`` and what only the tools read, from the same
``ENRICH_*`` variables: the recall API (`enrich recall serve`) and the local stack's ports
(`enrich demo`, `enrich stack up`, the bench). A worker started by a tool gets these as variables
too, and ignores them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from streams.settings import Settings


class ToolSettings(Settings):
    # Recall API (enrich recall serve)
    recall_bind: str = Field("127.0.0.1", description="address the recall API listens on; 0.0.0.0 to serve "
                                                      "other hosts (set ENRICH_RECALL_TOKEN then)")
    recall_token: SecretStr = Field(SecretStr(""), description="bearer token the recall API requires; empty: none")
    recall_page_items: int = Field(10_000, ge=1, description="newest items the recall server keeps for its "
                                                           "inspector page (titles, tags, previews)")
    recall_max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body the recall API reads")
    recall_timeout_s: float = Field(10.0, gt=0, description="the recall API drops a request that sends nothing "
                                                            "for this long")

    # Local stack
    local_broker: str = Field("tansu", pattern="^(tansu|kafka)$",
                              description="the broker the local stack starts (demo, eval, bench, tests): 'tansu' (the "
                                          "embedded broker, in memory) or 'kafka' (Apache Kafka 4.4 from Maven "
                                          "Central; needs Java 17+ and Maven)")
    local_kafka_nodes: int = Field(1, ge=1, le=5, description="Apache Kafka nodes the local stack starts (combined "
                                                              "broker and controller each)")
    kafka_cache_dir: Path = Field(Path("~/.cache/mm-enrich"), description="where the Apache Kafka jars "
                                  "are kept after the first fetch")
    broker_port: int = 9092
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
