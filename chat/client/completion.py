"""Tab completion for the interactive client: command words, then online usernames or
group names depending on the argument the cursor is in."""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from chat.client.commands import COMMAND_WORDS
from chat.client.roster import Roster

USER, GROUP = "user", "group"

#: For each command word, what its arguments are (the last kind repeats for no one).
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "/msg": (USER,), "/file": (USER,), "/join": (GROUP,), "/group": (GROUP,),
    "/leave": (GROUP,), "/delete": (GROUP,), "/showgroupmembers": (GROUP,), "/history": (GROUP,),
    "/groupfile": (GROUP,), "/add": (GROUP, USER), "/kick": (GROUP, USER),
    "@add": (GROUP, USER), "@kick": (GROUP, USER),
}
#: ``@group <sub>`` takes a group name after the subcommand.
AT_GROUP_SUBCOMMANDS = ("set", "send", "leave", "delete")


class ChatCompleter(Completer):
    def __init__(self, roster: Roster) -> None:
        self._roster = roster

    def _candidates(self, words: list[str]) -> Iterable[str]:
        """Candidates for the last (partial) word, given the words before it."""
        if len(words) == 1:
            at_users = [f"@{name}" for name in self._roster.online if name != self._roster.me]
            return [*COMMAND_WORDS, *at_users]
        command = words[0].casefold()
        if command == "@group":
            if len(words) == 2:
                return AT_GROUP_SUBCOMMANDS
            return self._roster.groups if len(words) == 3 else ()
        kinds = ARGUMENTS.get(command, ())
        position = len(words) - 2
        if position >= len(kinds):
            return ()
        return self._roster.online if kinds[position] == USER else self._roster.groups

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text or text[0] not in "/@":
            return
        words = text.split(" ")
        partial = words[-1]
        for candidate in self._candidates(words):
            if candidate.casefold().startswith(partial.casefold()):
                yield Completion(candidate, start_position=-len(partial))
