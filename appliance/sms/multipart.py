"""Multipart texts: the held parts of a concatenated SMS made into the message they were.

Pure functions over the store's fragments (the SMS line does the I/O). A group key is
"<sender>|<reference bits>|<reference>|<total>"; a variant group (a second text that used
the same reference and part numbers) is that key with "#<n>" (appliance/store/fragments.py).
"""

from __future__ import annotations

import hashlib

from appliance.store.fragments import variant_base
from appliance.store.models import Fragment, InboundMessage


def assemble(
    line_id: str, group: str, fragments: list[Fragment], sender_type: str, *, incomplete: bool
) -> InboundMessage:
    """The text the parts make, with a marker and a note for each part that never came."""
    sender, _bits, _ref, total_s = variant_base(group).rsplit("|", 3)
    total = int(total_s)
    by_index = {f.index: f for f in fragments}
    missing = [i for i in range(1, total + 1) if i not in by_index]
    pieces = []
    for i in range(1, total + 1):
        frag = by_index.get(i)
        pieces.append(frag.payload if frag else f"[part {i} of {total} missing]")
    first = min(fragments, key=lambda f: f.index)
    sent_at = min(f.sent_at for f in fragments)
    note = None
    if missing:
        which = ", ".join(str(i) for i in missing)
        note = f"Part {which} of this {total}-part text never arrived; what did arrive is shown."
    return InboundMessage(
        line_id=line_id,
        conversation=sender,
        sender=sender,
        body="".join(pieces),
        sent_at=sent_at,
        dedup_key=f"{group}|{sent_at}|{first.received_at}",
        note=note,
        meta={"sender_type": sender_type, "parts": str(total), "incomplete": str(incomplete)},
    )


def sort_collision(
    line_id: str, group: str, family: list[Fragment], sender_type: str, *, incomplete: bool
) -> tuple[list[InboundMessage], bool]:
    """The messages the parts of a group and its variants make, and whether they could be
    told apart.

    They are told apart by the service-centre timestamp when it works: as many distinct
    timestamps as texts, and no part number twice within one. Otherwise a guess could
    splice two texts together, so all the parts go to one quarantined row, in the order
    they arrived, for a person to read.
    """
    base = variant_base(group)
    texts = len({f.group_key for f in family})
    by_time: dict[int, list[Fragment]] = {}
    for frag in family:
        by_time.setdefault(frag.sent_at, []).append(frag)
    apart = len(by_time) == texts and all(
        len({f.index for f in frags}) == len(frags) for frags in by_time.values()
    )
    if apart:
        return [
            assemble(
                line_id, base, frags, sender_type,
                incomplete=incomplete or len(frags) < frags[0].total,
            )
            for _, frags in sorted(by_time.items())
        ], True
    sender, _bits, ref, total = base.rsplit("|", 3)
    digest = hashlib.sha256("\n".join(sorted(f.dedup_key for f in family)).encode()).hexdigest()
    body = " ".join(f"[part {f.index} of {total}] {f.payload}" for f in family)
    return [
        InboundMessage(
            line_id=line_id,
            conversation=sender,
            sender=sender,
            body=body,
            # The parts' PDUs are not kept once decoded; their words are the record.
            raw=body.encode("utf-8"),
            sent_at=min(f.sent_at for f in family),
            dedup_key=f"collision:{digest[:32]}",
            kind="quarantine",
            note=(
                f"{texts} texts from this sender arrived at the same time with the same part "
                f"numbers (reference {ref}), so their parts cannot be told apart. Every part "
                "is kept, in the order it arrived."
            ),
            meta={"sender_type": sender_type, "parts": total},
        )
    ], False
