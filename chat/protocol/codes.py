"""Every code on the wire, in one place (PROTOCOL.md sections 6.3 and 6.4).

Error and notice codes travel as strings in envelopes; close codes are WebSocket close
codes. The server raises and sends only these, the client renders each of them
(``chat/client/render.py``; a test checks that none is missing) and PROTOCOL.md lists
them. ``StrEnum`` members are strings, so they go into envelopes as they are.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """``error {code}``: why a request was refused (PROTOCOL.md section 6.3)."""

    # before login
    NOT_LOGGED_IN = "not_logged_in"
    ALREADY_LOGGED_IN = "already_logged_in"
    USERNAME_TAKEN = "username_taken"
    USERNAME_INVALID = "username_invalid"
    USERNAME_RESERVED = "username_reserved"
    REGISTRATION_REQUIRED = "registration_required"
    # users and groups
    USER_NOT_ONLINE = "user_not_online"
    NO_SUCH_GROUP = "no_such_group"
    GROUP_EXISTS = "group_exists"
    INVALID_GROUP_NAME = "invalid_group_name"
    NOT_MEMBER = "not_member"
    ALREADY_MEMBER = "already_member"
    NOT_OWNER = "not_owner"
    KICKED = "kicked"
    CANNOT_KICK_SELF = "cannot_kick_self"
    INVITE_ONLY = "invite_only"
    TOO_MANY_GROUPS = "too_many_groups"
    TOO_MANY_INVITATIONS = "too_many_invitations"
    TOO_MANY_OWNED_GROUPS = "too_many_owned_groups"
    CREATING_GROUPS_TOO_FAST = "creating_groups_too_fast"
    # accounts (section 6.5)
    PASSWORD_REQUIRED = "password_required"
    WRONG_PASSWORD = "wrong_password"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    ALREADY_REGISTERED = "already_registered"
    NOT_REGISTERED = "not_registered"
    WEAK_PASSWORD = "weak_password"
    TOO_MANY_REGISTRATIONS = "too_many_registrations"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_SHARE_FULL = "mailbox_share_full"
    # files (section 7)
    FILE_TOO_LARGE = "file_too_large"
    NO_RECIPIENTS = "no_recipients"
    TOO_MANY_TRANSFERS = "too_many_transfers"
    BAD_TRANSFER = "bad_transfer"
    # the server's state
    NETWORK_TOO_FAST = "network_too_fast"
    SERVER_BUSY = "server_busy"
    BAD_REQUEST = "bad_request"
    INTERNAL_ERROR = "internal_error"


class Feature(StrEnum):
    """Extensions a client asks for in ``login {features}`` and the server confirms in
    ``welcome {features}`` (PROTOCOL.md section 6.6). Without one, the server behaves as
    version 1 did before it: new event types reach only clients that asked for them."""

    #: Stored messages in acknowledged pages (``offline_page``, ``offline_ack``, ``welcome.offline``).
    OFFLINE_PAGES = "offline_pages"
    #: ``missed {count}`` after broadcasts were dropped for a slow reader.
    MISSED = "missed"
    #: Stored messages numbered (``mid``, ``seq``) in events and replies, idempotent sends
    #: (``cmid``), and a reconnecting session's missed messages replayed (section 6.8).
    RESUME = "resume"
    #: ``unread {groups}`` at a registered user's login: messages in their groups since
    #: they were last online (section 6.7).
    UNREAD = "unread"
    #: ``ticket {ticket, lifetime}`` right before ``welcome``: a session ticket its client
    #: may resume the handshake with next time, skipping RSA (section 2.7).
    TICKET = "ticket"


class NoticeCode(StrEnum):
    """``notice {code}``: a condition of the server, not a reply (PROTOCOL.md 6.3)."""

    TOO_FAST = "too_fast"
    SHUTDOWN = "shutdown"
    #: This node lost / regained its link to the other nodes of a cluster.
    CLUSTER_LOST = "cluster_lost"
    CLUSTER_BACK = "cluster_back"


class CloseCode(IntEnum):
    """The WebSocket close codes the server uses (PROTOCOL.md section 6.4)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    TRY_AGAIN_LATER = 1013
