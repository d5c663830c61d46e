"""The Tavily routes of the stub: search and extract."""

from __future__ import annotations

import math
import uuid
from typing import Any

from ._common import _DOMAINS, Reply, StubRequest
from ._plumbing import HandlerBase


class TavilyRoutes(HandlerBase):
    def _search(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        cfg = self.cfg
        query = str(body.get("query") or "")
        depth = body.get("search_depth") or "basic"
        max_results = int(body.get("max_results") or 5)
        count = max(0, min(max_results, cfg.randint(max(1, max_results - 2), max_results)))
        slug = "-".join(query.lower().split())[:60] or "result"
        results = []
        for i in range(count):
            words = cfg.words(cfg.randint(25, 60))
            domain = _DOMAINS[(i + len(query)) % len(_DOMAINS)]
            results.append({
                "url": f"https://{domain}/{slug}/{i + 1}",
                "title": f"{query.title()}: {' '.join(words[:4])}",
                "content": f"{query}: " + " ".join(words) + ".",
                "score": round(0.95 - i * 0.07 - cfg.random() * 0.05, 5),
                "raw_content": (" ".join(words) * 3) if body.get("include_raw_content") else None,
            })
        payload: dict[str, Any] = {
            "query": query, "follow_up_questions": None,
            "answer": (f"{query}: " + " ".join(cfg.words(30)) + ".") if body.get("include_answer") else None,
            "images": [], "results": results, "response_time": round(cfg.random() * 1.5 + 0.3, 2),
            "request_id": str(uuid.uuid4()),
        }
        want_usage = bool(body.get("include_usage")) if reply.include_usage is None else reply.include_usage
        if want_usage:
            payload["usage"] = {"credits": 2 if depth == "advanced" else 1}
        entry.result_count = count
        self._finish_json(entry, payload, reply)

    def _extract(self, entry: StubRequest, body: dict[str, Any], reply: Reply) -> None:
        cfg = self.cfg
        urls = body.get("urls") or []
        urls = [urls] if isinstance(urls, str) else list(urls)
        results, failed = [], []
        for url in urls:
            if "invalid" in str(url) or "fail" in str(url):
                failed.append({"url": url, "error": "Failed to fetch url"})
                continue
            text = " ".join(cfg.words(cfg.randint(120, 400)))
            results.append({"url": url, "raw_content": text, "images": []})
        payload: dict[str, Any] = {"results": results, "failed_results": failed,
                                   "response_time": round(cfg.random() * 2 + 0.2, 2),
                                   "request_id": str(uuid.uuid4())}
        want_usage = bool(body.get("include_usage")) if reply.include_usage is None else reply.include_usage
        if want_usage:
            per_five = 2 if body.get("extract_depth") == "advanced" else 1
            payload["usage"] = {"credits": per_five * math.ceil(len(results) / 5)}
        entry.result_count = len(results)
        self._finish_json(entry, payload, reply)
