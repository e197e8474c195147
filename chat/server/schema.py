"""The database's schema (versioned with ``PRAGMA user_version``: each entry of
``MIGRATIONS`` moves it one version up) and the rows the storage hands out."""

from __future__ import annotations

from dataclasses import dataclass, field

MIGRATIONS: list[str] = [
    # 1: accounts, groups, memberships, kicks, offline messages, group history.
    """
    CREATE TABLE account (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE chat_group (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner_key TEXT NOT NULL,
        created_seq INTEGER NOT NULL
    );
    CREATE TABLE group_member (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        user_name TEXT NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE group_kick (
        group_key TEXT NOT NULL REFERENCES chat_group(name_key) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        PRIMARY KEY (group_key, user_key)
    );
    CREATE TABLE offline_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX offline_by_recipient ON offline_message(recipient_key, id);
    CREATE TABLE group_message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_key TEXT NOT NULL,
        sender TEXT NOT NULL,
        text TEXT NOT NULL,
        sent_at REAL NOT NULL
    );
    CREATE INDEX history_by_group ON group_message(group_key, id);
    """,
    # 2: offline messages know who left them (an account, or a guest's network) and their
    # size, for the per-recipient, per-sender and server-wide quotas.
    """
    ALTER TABLE offline_message ADD COLUMN sender_key TEXT NOT NULL DEFAULT '';
    ALTER TABLE offline_message ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE offline_message SET size = length(CAST(text AS BLOB));
    CREATE INDEX offline_by_sender ON offline_message(recipient_key, sender_key);
    CREATE INDEX offline_by_age ON offline_message(sent_at);
    """,
    # 3: what each registered name looks like (names.skeleton), so a look-alike name is
    # refused like the name itself; filled in by _migrate for existing accounts.
    """
    ALTER TABLE account ADD COLUMN skeleton TEXT NOT NULL DEFAULT '';
    CREATE INDEX account_by_skeleton ON account(skeleton);
    """,
    # 4: invite-only groups; members added by the owner who have not accepted yet; where
    # each member's view of the history starts.
    """
    ALTER TABLE chat_group ADD COLUMN invite_only INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE group_member ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE group_member ADD COLUMN joined_at INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: when each group was last used (a message or a change), so abandoned groups expire;
    # existing groups count as used at the migration.
    """
    ALTER TABLE chat_group ADD COLUMN active_at REAL NOT NULL DEFAULT 0;
    UPDATE chat_group SET active_at = CAST(strftime('%s', 'now') AS REAL);
    """,
    # 6: every conversation message (broadcasts, private, group) in one table, with a
    # sequence number per conversation ('*', '@<key> <key>', '#<group key>'); the group
    # history moves in with its ids kept (members' join points are ids). ``recipient`` is
    # the group or the private recipient as written. The newest sequence number of each
    # conversation is kept apart, so it never goes back when old messages are pruned.
    # A client message id (``client_id``) is unique per sender: a message resent after a
    # reconnect is stored once. Accounts read their private conversations from
    # ``reads_from`` on (a message id: whoever held the name as a guest before gets
    # nothing of theirs); an offline message knows the stored message it copies. A
    # registered user's read marks: how far each group had gone when they left (the
    # count of what came after is told at their next login). New messages are indexed for
    # search in batches (message_store.py): ``search_state`` says how far. Full-text search
    # over the text with trigrams (finds words in scripts written without spaces too).
    """
    CREATE TABLE message (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        sent_at REAL NOT NULL,
        sender_key TEXT NOT NULL DEFAULT '',
        client_id TEXT,
        UNIQUE (conv, seq)
    );
    CREATE UNIQUE INDEX message_by_client_id ON message(sender_key, client_id)
        WHERE client_id IS NOT NULL;
    CREATE INDEX message_by_conv_id ON message(conv, id);
    CREATE INDEX message_by_age ON message(sent_at);
    CREATE TABLE conversation (
        conv TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    );
    INSERT INTO message (id, conv, seq, sender, recipient, text, sent_at)
        SELECT m.id, '#' || m.group_key, ROW_NUMBER() OVER (PARTITION BY m.group_key ORDER BY m.id),
               m.sender, COALESCE(g.name, m.group_key), m.text, m.sent_at
        FROM group_message m LEFT JOIN chat_group g ON g.name_key = m.group_key;
    INSERT INTO conversation (conv, last_seq) SELECT conv, MAX(seq) FROM message GROUP BY conv;
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'message', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'message');
    UPDATE sqlite_sequence
        SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'group_message'), 0))
        WHERE name = 'message';
    DROP TABLE group_message;
    CREATE TABLE read_mark (
        user_key TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (user_key, conv)
    );
    ALTER TABLE account ADD COLUMN reads_from INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE offline_message ADD COLUMN message_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE offline_message ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE VIRTUAL TABLE message_text USING fts5(
        text, content='message', content_rowid='id', tokenize='trigram'
    );
    CREATE TABLE search_state (indexed_upto INTEGER NOT NULL);
    INSERT INTO search_state VALUES ((SELECT COALESCE(MAX(id), 0) FROM message));
    INSERT INTO message_text (rowid, text) SELECT id, text FROM message;
    CREATE TRIGGER message_text_delete AFTER DELETE ON message
        WHEN old.id <= (SELECT indexed_upto FROM search_state) BEGIN
        INSERT INTO message_text (message_text, rowid, text) VALUES ('delete', old.id, old.text);
    END;
    """,
    # 7: the search index moves to a database file of its own (search_index.py, which
    # builds it again from the messages): its transactions no longer hold this database's
    # write lock, which every message waits for.
    """
    DROP TRIGGER message_text_delete;
    DROP TABLE message_text;
    DROP TABLE search_state;
    """,
]

#: The search database (``<db>-search``, attached as ``search``; search_index.py), made
#: anew when its ``user_version`` is not this: full-text search over the messages' text
#: with trigrams (finds words in scripts written without spaces too), keyed by message id,
#: with its own copy of the text (a deleted message's entry is found by its id alone);
#: how far the messages are indexed.
SEARCH_VERSION = 1
SEARCH_SCHEMA = """
    CREATE VIRTUAL TABLE search.message_text USING fts5(text, tokenize='trigram', columnsize=0);
    CREATE TABLE search.search_state (indexed_upto INTEGER NOT NULL);
    INSERT INTO search.search_state VALUES (0);
"""


@dataclass
class StoredGroup:
    name: str
    owner_key: str
    #: (user_key, user_name) in join order.
    members: list[tuple[str, str]] = field(default_factory=list)
    kicked: set[str] = field(default_factory=set)
    invite_only: bool = False
    #: Members who have not accepted the owner's add yet.
    pending: set[str] = field(default_factory=set)
    #: user_key -> id of the last group message before they joined.
    joined: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMessage:
    sender: str
    text: str
    sent_at: float
    #: The row's id, where the caller needs it (offline messages, acknowledged by id).
    id: int = 0
    #: The stored conversation message an offline message copies (0: none), and its seq.
    message_id: int = 0
    seq: int = 0


@dataclass(frozen=True)
class MailboxQuota:
    """What may wait for one offline user: in all, from one sender (an account, or a
    guest's network), and on the whole server."""

    max_messages: int
    max_bytes: int
    sender_messages: int
    sender_bytes: int
    server_bytes: int
