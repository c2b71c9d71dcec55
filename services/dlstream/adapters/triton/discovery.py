"""Discovery: the catalog of served models, fetched from Triton (gRPC) and kept fresh by polling.

The ready versions come from Triton's statistics extension, which lists every ready model version, not from
the repository index: the index belongs to Triton's control API, which may be behind a key that workers do
not hold. A model's config is fetched again only when its ready versions change, so a refresh is one
statistics call when nothing changed. When Triton cannot be asked, the last catalog is kept and marked
unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog
from tritonclient.utils import InferenceServerException

from dlstream.adapters.triton.client import grpc_client
from dlstream.config.settings import TritonSettings
from dlstream.domain.catalog import READY, ModelCatalog, catalog_from_triton
from dlstream.domain.errors import TransientError

log = structlog.get_logger("dlstream.discovery")


class TritonDiscovery:
    """Holds the current :class:`ModelCatalog`; :meth:`refresh` asks Triton again."""

    def __init__(
        self,
        settings: TritonSettings,
        *,
        overrides: Mapping[str, str] | None = None,
        client: Any = None,
        log_changes: bool = True,
    ) -> None:
        self.settings = settings
        self.log_changes = log_changes
        self.overrides = dict(overrides or {})
        self._client: Any = client  # made on first use, inside the event loop that uses it
        self._configs: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}
        self.catalog = ModelCatalog(overrides=self.overrides)
        self._asked = False  # whether a refresh has run: the first one's failure is logged as well

    async def refresh(self) -> ModelCatalog:
        """Ask Triton which models are ready and read the configs of those that changed.

        Each call is bounded by ``request_timeout_s``: a Triton that accepts connections but no longer
        answers (hung after a crash) is unreachable, not a refresh that never returns.
        """
        if self._client is None:
            self._client = grpc_client(self.settings)
        timeout = self.settings.request_timeout_s
        try:
            reply = await self._client.get_inference_statistics(as_json=True, client_timeout=timeout)
            index = [
                {"name": entry.get("name", ""), "version": entry.get("version", ""), "state": READY}
                for entry in reply.get("model_stats", [])
            ]
            ready: dict[str, tuple[str, ...]] = {}
            for entry in index:
                if entry.get("state") == READY:
                    ready[entry["name"]] = (*ready.get(entry["name"], ()), str(entry.get("version", "")))
            configs: dict[str, dict[str, Any]] = {}
            for name, versions in ready.items():
                cached = self._configs.get(name)
                if cached is None or cached[0] != versions:
                    try:
                        reply = await self._client.get_model_config(
                            name, as_json=True, client_timeout=timeout
                        )
                        config = reply.get("config", {})
                    except InferenceServerException as exc:
                        log.warning("discovery.config_failed", model=name, error=str(exc))
                        continue  # unloaded between the two calls; seen again on the next refresh
                    cached = (versions, config)
                    self._configs[name] = cached
                configs[name] = cached[1]
        except InferenceServerException as exc:
            if self.catalog.reachable or not self._asked:
                log.warning("discovery.triton_unreachable", url=self.settings.grpc_url, error=str(exc))
            self._asked = True
            self.catalog = ModelCatalog(
                models=self.catalog.models,
                problems=self.catalog.problems,
                overrides=self.overrides,
                reachable=False,
            )
            return self.catalog
        if not self.catalog.reachable and self._asked:
            log.info("discovery.triton_reachable", url=self.settings.grpc_url)
        self._asked = True
        for name in set(self._configs) - set(ready):
            del self._configs[name]
        catalog = catalog_from_triton(index, configs, overrides=self.overrides)
        changed = set(catalog.models) != set(self.catalog.models) or catalog.problems != self.catalog.problems
        if changed and self.log_changes:
            log.info(
                "discovery.models",
                models={m.name: list(m.versions) for m in catalog.models.values()},
                problems=dict(catalog.problems),
            )
        self.catalog = catalog
        return catalog

    async def close(self) -> None:
        """Close the channel."""
        if self._client is not None:
            await self._client.close()
            self._client = None


def discover_once(settings: TritonSettings, *, overrides: Mapping[str, str] | None = None) -> ModelCatalog:
    """The catalog as a worker would see it now (for the CLI and tools outside an event loop).

    Raises:
        TransientError: Triton cannot be asked.
    """

    async def run() -> ModelCatalog:
        discovery = TritonDiscovery(settings, overrides=overrides, log_changes=False)
        try:
            return await discovery.refresh()
        finally:
            await discovery.close()

    catalog = asyncio.run(run())
    if not catalog.reachable:
        raise TransientError(f"Triton at {settings.grpc_url} cannot be asked which models it serves")
    return catalog
