"""`scanner export DIR --format cybertip-draft`: per matched row, a draft of what a CyberTipline web-page
incident report asks for, for the team's own submission tooling. Nothing is ever sent anywhere.

The reporting schema is not public: the names below follow the public descriptions of the CyberTipline
reporting API and web form as we understand them, and the submitter must check the mapping against the
schema NCMEC gives them before any use (docs/review.md). Each draft is one JSON line; DRAFT_FIELDS maps
every field to the scanner report value it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from scanner.reports import jsonl
from scanner.reports.review import by_row

CYBERTIP_DRAFT = "cybertip-draft"
DRAFT_FIELDS: dict[str, str] = {
    "incidentSummary.incidentDateTime": "evidence observed_at: when the response was received (UTC)",
    "internetDetails.webPageIncident.url": "the dataset row's URL (matches.jsonl url)",
    "internetDetails.webPageIncident.finalUrl": "the URL that served the image, after redirects",
    "fileDetails.ipCaptureEvent.ipAddress": "the server's address the image came from (evidence server_ip)",
    "fileDetails.ipCaptureEvent.date": "evidence observed_at",
    "fileDetails.contentType": "the response's Content-Type header",
    "fileDetails.fileSize": "bytes of the body as received (evidence content_length)",
    "fileDetails.originalFileHash[].hashType": "md5, sha1, sha256, pdq, phash, dhash (hash_type)",
    "fileDetails.originalFileHash[].value": "the image's own hash that matched (matches.jsonl hash)",
    "scanner.matches[]": "list, entry id, classification (the entry's category), distance of each match",
    "scanner.row": "dataset, shard, row, key, member: where the row is, to find it again",
}
"""Each draft field and where its value comes from (docs/review.md prints this table)."""


def write_drafts(handle: IO[str], referrals: Iterable[dict]) -> int:
    """One draft line per row (a row's referral records come together); returns how many."""
    count = 0
    for row in by_row(referrals):
        handle.write(jsonl.dumps(draft(row), sort_keys=False) + "\n")
        count += 1
    return count


def draft(records: list[dict]) -> dict:
    """The draft for one matched row from its referral records (export.referral, one per match)."""
    first = records[0]
    hashes = {(r["hash_type"], r.get("hash")): None for r in records if r.get("hash")}
    return {
        "draft": CYBERTIP_DRAFT,
        "sent": False,
        "incidentSummary": {"incidentType": None, "incidentDateTime": first.get("observed_at")},
        "internetDetails": {"webPageIncident": {"url": first.get("url"), "finalUrl": first.get("final_url")}},
        "fileDetails": {
            "ipCaptureEvent": {"ipAddress": first.get("server_ip"), "date": first.get("observed_at")},
            "contentType": first.get("content_type"),
            "fileSize": first.get("content_length"),
            "originalFileHash": [{"hashType": kind, "value": value} for kind, value in hashes],
        },
        "scanner": {
            "verdict": first.get("verdict"),
            "matches": [
                {
                    "list": r["list"],
                    "entryId": r["entry_id"],
                    "classification": r.get("classification") or r.get("category"),
                    "hashType": r["hash_type"],
                    "distance": r["distance"],
                }
                for r in records
            ],
            "row": {k: first.get(k) for k in ("dataset", "shard", "row", "key", "member")},
        },
    }
