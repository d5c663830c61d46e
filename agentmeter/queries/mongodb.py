"""MongoDB (``agent_metadata``, one document per run, as :class:`agentmeter.sinks.MongoDBSink` stores it)
as a dashboard :class:`~agentmeter.queries.base.Source`.

The filters run on the server: run filters as a ``$match`` on the indexed ``started_at`` (a BSON date,
milliseconds) refined by the exact microsecond string ``_iso.started_at``, ``agent`` and ``status``;
steps and calls are ``$unwind``-ed and matched on their own ``started_at`` strings. Only the fields a view
needs are projected and sent back, and the frames are computed in pandas (:mod:`._frames`): mongomock,
which the tests use, lacks ``$percentile``/``$dateTrunc``, and PERCENTILE_CONT must match the other
sources exactly. Filter values only ever appear as values in query documents, never as keys or operators.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from . import base
from ._frames import CALL_FIELDS, RUN_FIELDS, STEP_FIELDS, Frames
from .base import Filters, RunDetail, Source, SourceUnavailable, check_bucket, check_limit, conform, one_line
from .rollups import DIMENSION_FIELDS

__all__ = ["MongoSource", "from_env"]

_HINT = ("Check AGENTMETER_MONGODB_URI (host, port, credentials, TLS), that the server is up and reachable "
         "from here, and AGENTMETER_MONGODB_DATABASE / AGENTMETER_MONGODB_COLLECTION.")


def from_env(environ: Mapping[str, str] | None = None, **options: Any) -> MongoSource:
    """From ``AGENTMETER_MONGODB_URI`` (required), ``AGENTMETER_MONGODB_DATABASE`` (default: the URI's
    database or ``agentmeter``) and ``AGENTMETER_MONGODB_COLLECTION`` (default ``agent_metadata``).
    Raises :class:`SourceUnavailable` when the URI is unset or unusable (its password never shown)."""
    env = os.environ if environ is None else environ
    uri = env.get("AGENTMETER_MONGODB_URI", "").strip()
    if not uri:
        raise SourceUnavailable("AGENTMETER_MONGODB_URI is not set.",
                                "Set AGENTMETER_MONGODB_URI=mongodb://host:27017 (and optionally "
                                "AGENTMETER_MONGODB_DATABASE, AGENTMETER_MONGODB_COLLECTION).")
    import pymongo  # optional extra [mongodb]
    import pymongo.errors  # optional extra [mongodb]

    try:
        client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000,
                                          socketTimeoutMS=30000, appname="agentmeter-dashboard")
    except (pymongo.errors.PyMongoError, ValueError) as exc:  # a mistyped URI, an srv name that does not resolve
        raise SourceUnavailable(f"AGENTMETER_MONGODB_URI cannot be used: {type(exc).__name__}: {str(exc)[:500]}",
                                _HINT) from exc
    database = env.get("AGENTMETER_MONGODB_DATABASE") or None
    db = client.get_database(database) if database else client.get_default_database("agentmeter")
    collection = env.get("AGENTMETER_MONGODB_COLLECTION") or "agent_metadata"
    return MongoSource(db[collection], **options)


def _date_floor(iso: str) -> datetime:
    """The BSON date (milliseconds) at or before the ISO time: a superset bound for the indexed field."""
    dt = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


class MongoSource(Source):
    """Reads run documents from a pymongo (or mongomock) ``collection``."""

    kind = "mongodb"

    def __init__(self, collection: Any, scores_collection: str = "run_scores") -> None:
        self.collection = collection
        self.scores_collection = scores_collection

    def describe(self) -> str:
        try:
            return f"MongoDB {self.collection.database.name}.{self.collection.name}"
        except Exception:
            return "MongoDB"

    def _guard(self, exc: Exception) -> SourceUnavailable:
        return SourceUnavailable(f"MongoDB query failed: {one_line(exc)}", _HINT, f"{type(exc).__name__}: {exc}"[:5000])

    def _aggregate(self, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import pymongo.errors  # optional extra [mongodb]

        try:
            return list(self.collection.aggregate(pipeline, allowDiskUse=True))
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc

    def check(self) -> None:
        import pymongo.errors  # optional extra [mongodb]

        try:
            self.collection.find_one({}, {"_id": 1})
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc

    def has_runs(self) -> bool:
        import pymongo.errors  # optional extra [mongodb]

        try:
            return self.collection.find_one({}, {"_id": 1}) is not None
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc

    # -- queries -------------------------------------------------------------------------------------

    @staticmethod
    def _run_match(f: Filters, with_time: bool = True) -> dict[str, Any]:
        match: dict[str, Any] = {}
        if with_time and (f.since or f.until):
            coarse: dict[str, Any] = {}
            exact: dict[str, Any] = {}
            if f.since:
                coarse["$gte"] = _date_floor(f.since)
                exact["$gte"] = f.since
            if f.until:  # stored date = floor_ms(start) <= floor_ms(until) whenever start < until
                coarse["$lte"] = _date_floor(f.until)
                exact["$lt"] = f.until
            match["started_at"] = coarse
            match["_iso.started_at"] = exact
        if f.agents:
            match["agent"] = {"$in": list(f.agents)}
        if f.statuses:
            match["status"] = {"$in": list(f.statuses)}
        for name, column in base.RUN_DIMENSIONS.items():
            if getattr(f, name):
                match[column] = {"$in": list(getattr(f, name))}
        for name, column in base.RUN_MINIMUMS.items():
            if getattr(f, name) is not None:
                match[column] = {"$gte": getattr(f, name)}
        if f.tags:
            match["tags"] = {"$in": list(f.tags)}
        if f.models:
            match["calls.model"] = {"$in": list(f.models)}
        return match

    def _runs(self, f: Filters) -> pd.DataFrame:
        project: dict[str, Any] = {k: 1 for k in RUN_FIELDS if k not in ("started_at", "models")}
        project.update({"_id": 0, "started_at": {"$ifNull": ["$_iso.started_at", "$started_at"]},
                        "models": "$calls.model"})
        rows = self._aggregate([{"$match": self._run_match(f)}, {"$project": project}])
        df = pd.DataFrame(rows, columns=list(RUN_FIELDS))
        df["started_at"] = df["started_at"].map(_iso)
        return df

    def dimension_runs(self, f: Filters) -> list[dict[str, Any]]:
        project: dict[str, Any] = {k: {"$ifNull": [f"${k}", None]} for k in DIMENSION_FIELDS if k != "started_at"}
        project.update({"_id": 0, "started_at": {"$ifNull": ["$_iso.started_at", "$started_at"]}})
        rows = self._aggregate([{"$match": self._run_match(f)}, {"$project": project}])
        for row in rows:
            row["started_at"] = _iso(row["started_at"])
        return rows

    def latest_scores(self) -> list[tuple[str, float]]:
        import pymongo.errors  # optional extra [mongodb]

        try:  # one document per score_id, the latest (see agentmeter.sinks.mongodb)
            found = self.collection.database[self.scores_collection].find(
                {"value": {"$ne": None}}, {"_id": 0, "run_id": 1, "value": 1})
            return [(str(s["run_id"]), float(s["value"])) for s in found if s.get("value") is not None]
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc

    def _scores_find(self, query: dict[str, Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
        import pymongo.errors  # optional extra [mongodb]

        try:
            found = self.collection.database[self.scores_collection].find(
                query, {"_id": 0, **{k: 1 for k in fields}})
            return [dict(s) for s in found]
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc

    def run_scores(self, run_id: str) -> pd.DataFrame:
        fields = tuple(n for n, _ in base.RUN_SCORES)
        rows = sorted(self._scores_find({"run_id": str(run_id)}, fields),
                      key=lambda r: (str(r.get("name")), str(r.get("source"))))
        return conform(pd.DataFrame(rows).reindex(columns=list(fields)), base.RUN_SCORES)

    def scores(self, f: Filters) -> pd.DataFrame:
        runs = self._aggregate([{"$match": self._run_match(f)},
                                {"$project": {"_id": 1, "started_at": {"$ifNull": ["$_iso.started_at",
                                                                                  "$started_at"]}}}])
        started = {str(r["_id"]): _iso(r["started_at"]) for r in runs}
        fields = ("run_id", "name", "source", "data_type", "value", "label")
        rows: list[dict[str, Any]] = []
        ids = list(started)
        for i in range(0, len(ids), 10_000):  # bounded queries however many runs match
            rows += self._scores_find({"run_id": {"$in": ids[i:i + 10_000]}}, fields)
        for r in rows:
            r["started_at"] = started.get(str(r["run_id"]))
        rows.sort(key=lambda r: (r["started_at"] or "", str(r["run_id"]), str(r.get("name")), str(r.get("source"))))
        return conform(pd.DataFrame(rows).reindex(columns=[n for n, _ in base.SCORES]), base.SCORES)

    def _children(self, f: Filters, field: str, fields: tuple[str, ...]) -> pd.DataFrame:
        child_match: dict[str, Any] = {}
        time: dict[str, Any] = {}
        if f.since:
            time["$gte"] = f.since
        if f.until:
            time["$lt"] = f.until
        if time:
            child_match[f"{field}.started_at"] = time
        if f.models and field == "calls":  # the call views show only the chosen models' calls
            child_match["calls.model"] = {"$in": list(f.models)}
        pipeline: list[dict[str, Any]] = [
            {"$match": self._run_match(f, with_time=False)},
            {"$project": {"_id": 0, field: 1}},
            {"$unwind": f"${field}"},
        ]
        if child_match:
            pipeline.append({"$match": child_match})
        pipeline.append({"$project": {k: f"${field}.{k}" for k in fields}})
        return pd.DataFrame(self._aggregate(pipeline), columns=list(fields))

    def _frames(self, f: Filters, runs: bool = True, steps: bool = False, calls: bool = False) -> Frames:
        empty = pd.DataFrame()
        return Frames(
            self._runs(f) if runs else empty,
            self._children(f, "steps", STEP_FIELDS) if steps else empty,
            self._children(f, "calls", CALL_FIELDS) if calls else empty,
        )

    def agents(self) -> pd.DataFrame:
        rows = self._aggregate([
            {"$match": {"agent": {"$ne": None}}},
            {"$group": {"_id": "$agent", "runs": {"$sum": 1},
                        "last_seen": {"$max": {"$ifNull": ["$_iso.started_at", "$started_at"]}}}},
            {"$sort": {"_id": 1}},
        ])
        return conform([{"agent": r["_id"], "runs": r["runs"], "last_seen": _iso(r["last_seen"])} for r in rows]
                       or pd.DataFrame(columns=["agent", "runs", "last_seen"]), base.AGENTS)

    def filter_values(self, name: str) -> list[str]:
        import pymongo.errors  # optional extra [mongodb]

        base.check_filter_name(name)
        field = {"tags": "tags", "models": "calls.model"}.get(name) or base.RUN_DIMENSIONS[name]
        try:  # served by the field's index where there is one (multikey for tags and calls.model)
            values = self.collection.distinct(field)
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc
        return sorted(str(v) for v in values if isinstance(v, str))[: base.FILTER_VALUES_LIMIT]

    def kpis(self, f: Filters) -> pd.DataFrame:
        return self._frames(f).kpis()

    def agent_kpis(self, f: Filters) -> pd.DataFrame:
        return self._frames(f).agent_kpis()

    def status_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        return self._frames(f).status_over_time(check_bucket(bucket))

    def latency_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        return self._frames(f).latency_over_time(check_bucket(bucket))

    def step_latency(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, steps=True).step_latency()

    def api_latency(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).api_latency()

    def step_errors(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, steps=True).step_errors()

    def call_errors(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).call_errors()

    def slowest_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        return self._frames(f).slowest_runs(check_limit(limit))

    def recent_failures(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        return self._frames(f).recent_failures(check_limit(limit))

    def runs_per_agent(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        return self._frames(f).runs_per_agent(check_bucket(bucket))

    def calls_by_provider(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).calls_by_provider()

    def cache_tokens(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).cache_tokens()

    def tokens_by_model(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).tokens_by_model()

    def cost_over_time(self, f: Filters, bucket: str = "day") -> pd.DataFrame:
        return self._frames(f).cost_over_time(check_bucket(bucket))

    def cost_by_model(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).cost_by_model()

    def cost_by_provider(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).cost_by_provider()

    def cost_by_agent(self, f: Filters) -> pd.DataFrame:
        return self._frames(f).cost_by_agent()

    def expensive_runs(self, f: Filters, limit: int = 20) -> pd.DataFrame:
        return self._frames(f).expensive_runs(check_limit(limit))

    def unpriced_calls(self, f: Filters) -> pd.DataFrame:
        return self._frames(f, runs=False, calls=True).unpriced_calls()

    def search_runs(self, f: Filters, run_id_prefix: str = "", limit: int = 100,
                    order: str = "newest") -> pd.DataFrame:
        return self._frames(f).search_runs(str(run_id_prefix or "").strip(), check_limit(limit), order)

    def count_runs(self, f: Filters, run_id_prefix: str = "") -> int:
        return self._frames(f).count_runs(str(run_id_prefix or "").strip())

    def run_detail(self, run_id: str) -> RunDetail | None:
        import pymongo.errors  # optional extra [mongodb]

        try:
            doc = self.collection.find_one({"_id": str(run_id)})
        except pymongo.errors.PyMongoError as exc:
            raise self._guard(exc) from exc
        if doc is None:
            return None
        run = _as_json_text(dict(doc), base.RUN_SUMMARY)
        run["started_at"] = (doc.get("_iso") or {}).get("started_at") or _iso(doc.get("started_at"))
        run["ended_at"] = (doc.get("_iso") or {}).get("ended_at") or _iso(doc.get("ended_at"))
        steps = [_as_json_text(s, base.RUN_STEPS) for s in sorted(
            doc.get("steps") or [], key=lambda s: (s.get("started_at") or "", s.get("step_id")))]
        calls = [_as_json_text(c, base.RUN_CALLS) for c in sorted(
            doc.get("calls") or [], key=lambda c: (c.get("started_at") or "", c.get("call_id")))]
        return RunDetail(
            conform(pd.DataFrame([run]).reindex(columns=[n for n, _ in base.RUN_SUMMARY]), base.RUN_SUMMARY),
            conform(pd.DataFrame(steps).reindex(columns=[n for n, _ in base.RUN_STEPS]), base.RUN_STEPS),
            conform(pd.DataFrame(calls).reindex(columns=[n for n, _ in base.RUN_CALLS]), base.RUN_CALLS),
        )

    def close(self) -> None:
        try:
            self.collection.database.client.close()
        except Exception:
            pass


def _as_json_text(item: Mapping[str, Any], spec: base.Spec) -> dict[str, Any]:
    """The item with its ``json`` columns as JSON text, the form :func:`~.base.conform` reads (as the SQL
    stores keep them)."""
    out = dict(item)
    for name, kind in spec:
        if kind == "json" and out.get(name) is not None:
            out[name] = json.dumps(out[name], default=str)
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value
