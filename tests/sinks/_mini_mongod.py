"""A tiny MongoDB on MongoDB's wire-protocol test server (mockupdb), for the real pymongo driver.

It answers as the primary of a one-member replica set (so pymongo's retryable writes are on) and
implements just what the sink tests use: ``insert`` (with duplicate-key write errors), ``update`` as a
replacement by ``_id`` with ``$lt`` conditions and ``upsert`` (an upsert whose condition fails on an
existing ``_id`` is a duplicate-key write error, as on a real server), ``find`` by ``_id``,
``createIndexes``/``listIndexes``, ``drop``, ``create`` with a validator of the form
``{field: {"$ne": value}}`` (a document failing it is a write error 121, as on a real server; one over
16 MiB is a write error 2, "object to insert too large"), and MongoDB's own test fail point
``configureFailPoint failCommand`` (``errorCode``, ``errorLabels``, ``closeConnection``, ``times``). The
tests therefore inject faults the same way against this server and against a real ``mongod`` started with
``enableTestCommands=1``.
"""

from __future__ import annotations

import threading
from typing import Any

import bson
from bson import ObjectId
from mockupdb import MockupDB

MAX_BSON_SIZE = 16 * 1024 * 1024


class MiniMongod:
    def __init__(self) -> None:
        self.server = MockupDB(auto_ismaster=False, max_wire_version=21)
        self.port = self.server.run()
        self.host = f"localhost:{self.port}"
        self.uri = f"mongodb://{self.host}/?replicaSet=rs0"
        self.lock = threading.Lock()
        self.collections: dict[str, dict[Any, dict[str, Any]]] = {}
        self.indexes: dict[str, list[dict[str, Any]]] = {}
        self.validators: dict[str, dict[str, Any]] = {}
        self.failpoint: dict[str, Any] | None = None
        self.commands: list[str] = []
        self.election_id = ObjectId()
        self.server.autoresponds(self.handle)

    # -- protocol -------------------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        return {
            "ok": 1, "ismaster": True, "isWritablePrimary": True, "helloOk": True, "secondary": False,
            "setName": "rs0", "setVersion": 1, "electionId": self.election_id, "hosts": [self.host],
            "primary": self.host, "me": self.host, "minWireVersion": 0, "maxWireVersion": 21,
            "logicalSessionTimeoutMinutes": 30, "maxBsonObjectSize": MAX_BSON_SIZE,
            "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000, "connectionId": 1,
        }

    def handle(self, request: Any) -> bool:
        name = (request.command_name or "").lower()
        doc = request.doc
        if name in ("hello", "ismaster"):
            return bool(request.replies(self.hello()))
        with self.lock:
            self.commands.append(name)
            fp = self.failpoint
            if fp is not None and name in {c.lower() for c in fp["data"].get("failCommands", [])}:
                fp["times"] -= 1
                if fp["times"] <= 0:
                    self.failpoint = None
                if fp["data"].get("closeConnection"):
                    return bool(request.hangup())
                reply: dict[str, Any] = {"ok": 0, "code": fp["data"].get("errorCode", 1),
                                         "errmsg": "Failing command via 'failCommand' failpoint"}
                if fp["data"].get("errorLabels"):
                    reply["errorLabels"] = list(fp["data"]["errorLabels"])
                return bool(request.replies(reply))
            ns = f"{doc.get('$db')}.{doc.get(request.command_name)}"
            if name == "configurefailpoint":
                mode = doc.get("mode")
                if mode == "off":
                    self.failpoint = None
                else:
                    times = mode.get("times", 1) if isinstance(mode, dict) else 10**9
                    self.failpoint = {"times": times, "data": dict(doc.get("data", {}))}
                return bool(request.replies({"ok": 1}))
            if name == "create":
                if doc.get("validator"):
                    self.validators[ns] = dict(doc["validator"])
                return bool(request.replies({"ok": 1}))
            if name == "insert":
                return bool(request.replies(self.insert(ns, doc)))
            if name == "update":
                return bool(request.replies(self.update(ns, doc)))
            if name == "find":
                return bool(request.replies(self.find(ns, doc)))
            if name == "createindexes":
                self.indexes.setdefault(ns, []).extend(doc["indexes"])
                after = 1 + len(self.indexes[ns])
                return bool(request.replies({"ok": 1, "numIndexesBefore": 1, "numIndexesAfter": after}))
            if name == "listindexes":
                batch = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, *self.indexes.get(ns, [])]
                return bool(request.replies({"ok": 1, "cursor": {"id": 0, "ns": ns, "firstBatch": batch}}))
            if name == "drop":
                self.collections.pop(ns, None)
                self.indexes.pop(ns, None)
                self.validators.pop(ns, None)
                return bool(request.replies({"ok": 1}))
            if name == "dropdatabase":
                db = str(doc.get("$db"))
                for key in [k for k in self.collections if k.startswith(db + ".")]:
                    del self.collections[key]
                return bool(request.replies({"ok": 1}))
        return bool(request.replies({"ok": 1}))  # endSessions, ping, buildInfo, killCursors...

    def insert(self, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
        store = self.collections.setdefault(ns, {})
        errors = []
        n = 0
        validator = self.validators.get(ns, {})
        for i, item in enumerate(doc.get("documents", [])):
            size = len(bson.encode(item))
            if size > MAX_BSON_SIZE:
                errors.append({"index": i, "code": 2, "errmsg": f"object to insert too large. size in bytes: "
                               f"{size}, max size: {MAX_BSON_SIZE}"})
                if doc.get("ordered", True):
                    break
                continue
            if any(item.get(field) == rule["$ne"] for field, rule in validator.items()):
                errors.append({"index": i, "code": 121, "errmsg": "Document failed validation"})
                if doc.get("ordered", True):
                    break
                continue
            if item["_id"] in store:
                errors.append({"index": i, "code": 11000,
                               "errmsg": f"E11000 duplicate key error collection: {ns} index: _id_ dup key"})
                if doc.get("ordered", True):
                    break
                continue
            store[item["_id"]] = item
            n += 1
        reply: dict[str, Any] = {"ok": 1, "n": n}
        if errors:
            reply["writeErrors"] = errors
        return reply

    def update(self, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
        store = self.collections.setdefault(ns, {})
        errors, matched, upserted = [], 0, []
        for i, spec in enumerate(doc.get("updates", [])):
            query, replacement = dict(spec["q"]), dict(spec["u"])
            key = query.pop("_id")
            current = store.get(key)
            ok = current is not None and all(
                field in current and current[field] < rule["$lt"] for field, rule in query.items())
            if ok:
                store[key] = {**replacement, "_id": key}
                matched += 1
            elif spec.get("upsert"):
                if current is not None:
                    errors.append({"index": i, "code": 11000,
                                   "errmsg": f"E11000 duplicate key error collection: {ns} index: _id_ dup key"})
                    if doc.get("ordered", True):
                        break
                    continue
                store[key] = {**replacement, "_id": key}
                upserted.append({"index": i, "_id": key})
        reply: dict[str, Any] = {"ok": 1, "n": matched + len(upserted), "nModified": matched}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def find(self, ns: str, doc: dict[str, Any]) -> dict[str, Any]:
        store = self.collections.get(ns, {})
        flt = doc.get("filter") or {}
        if "_id" in flt:
            want = flt["_id"]
            ids = want["$in"] if isinstance(want, dict) and "$in" in want else [want]
            batch = [store[i] for i in ids if i in store]
        else:
            batch = list(store.values())
        return {"ok": 1, "cursor": {"id": 0, "ns": ns, "firstBatch": batch}}

    def stop(self) -> None:
        self.server.stop()
