"""Who is in a group conversation on the phone, and whether Textbridge knows all of them.

A group notification names only the people who wrote in it, so the senders seen are never
taken for the whole group: a reply addressed to them alone would reach each of them as a
private text (and leave the others out). The full list comes from the phone:

- the telephony provider's thread of the conversation (`content://mms-sms/conversations`
  with its recipient ids, `content://mms-sms/canonical-addresses`), picked as the one thread
  whose recipients include every sender seen and whose last message is the notification's;
- the addresses of a group MMS (`content://mms/<id>/addr`, sender and recipients).

Until one of those has given the members, a reply to the group is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliance.phone.device import Thread

# An MMS thread's last message and the notification's are the same message when their
# times are this close (the provider and the notification are written at slightly
# different moments).
SAME_MESSAGE_MS = 120_000


@dataclass
class Group:
    members: list[str] = field(default_factory=list)  # as numbers where the phone has them
    complete: bool = False  # the phone gave the whole list, not only who wrote
    name: str = ""
    last_text: str | None = None
    last_time: int = 0
    tried: int = -1  # last_time when the phone was last asked for the members


class Groups:
    def __init__(self) -> None:
        self._by_conversation: dict[str, Group] = {}

    def get(self, conversation: str) -> Group | None:
        return self._by_conversation.get(conversation)

    def saw(
        self, conversation: str, senders: Sequence[str], name: str, last: tuple[str, int] | None
    ) -> Group:
        """A group notification showed these senders; returns the group as known now."""
        group = self._by_conversation.setdefault(conversation, Group())
        if group.complete and not set(senders) <= set(group.members):
            # Someone new wrote: the group has grown since its list was read; a reply to
            # the old list would leave them out, so the list is read again.
            group.complete = False
        if not group.complete:
            group.members = sorted(set(group.members) | set(senders))
        if name:
            group.name = name
        if last is not None and last[1] >= group.last_time:
            group.last_text, group.last_time = last
        return group

    def learn(self, conversation: str, members: Sequence[str]) -> Group:
        """The phone gave the whole list of this group's members."""
        group = self._by_conversation.setdefault(conversation, Group())
        group.members, group.complete = sorted(set(members)), True
        return group

    def with_members(self, people: Sequence[str]) -> str | None:
        """The conversation whose full member list is exactly these people."""
        wanted = sorted(set(people))
        for conversation, group in self._by_conversation.items():
            if group.complete and group.members == wanted:
                return conversation
        return None


def match_thread(
    threads: Sequence[Thread], group: Group, address: Callable[[str], str]
) -> list[str] | None:
    """The members of the one thread that is this group's, or None when no thread, or
    more than one, fits: a guess could address a different group."""
    senders = set(group.members)
    if not senders or group.last_text is None:
        return None
    found: list[list[str]] = []
    for thread in threads:
        people = {address(r) for r in thread.recipients}
        if len(people) < 2 or not senders <= people:
            continue
        # Its last message must be the notification's: the same text, or (an MMS thread,
        # whose snippet is the message's subject, mostly empty) the same time.
        same = thread.snippet == group.last_text or (
            not thread.snippet and abs(thread.date - group.last_time) <= SAME_MESSAGE_MS
        )
        if not same:
            continue
        found.append(sorted(people))
    return found[0] if len(found) == 1 else None
