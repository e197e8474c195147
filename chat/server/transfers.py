"""File transfers relayed through the server (PROTOCOL.md section 7).

The server never stores file data: each chunk is checked and forwarded to the recipients
who accepted, and flow control bounds what is in flight. A sender may be at most
``window`` bytes ahead of the slowest accepted recipient's acknowledgement; a chunk past
that, out of order, or past the declared size aborts the transfer. A transfer ends with a
``file_result`` to the sender once every recipient has stored the file (``file_done``),
failed, declined or gone.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import OrderedDict
from typing import Any

from chat.protocol.codes import ErrorCode
from chat.protocol.envelope import Envelope, encode_event
from chat.protocol.flow import FlowError, RelayWindow
from chat.protocol.limits import MAX_LIST_ITEMS
from chat.server.errors import RequestError
from chat.server.names import key
from chat.server.ratelimit import KeyedBuckets
from chat.server.request_context import RequestContext
from chat.server.transfer_state import Transfer

#: File requests per second (and twice that in a burst) one user may have forwarded to
#: the nodes relaying transfers to them.
FORWARDED_PER_SECOND = 400.0
#: Transfers whose result was sent; late chunks for them are ignored, not errors. Chunks
#: and acks still in flight when a transfer ends must find it here even on a busy server.
_RECENTLY_CLOSED = 4096


class TransferRelay:
    """Every transfer in flight on this server."""

    def __init__(
        self, max_file_size: int, window: int, max_per_user: int, offer_timeout: float = 60.0,
        idle_timeout: float = 60.0, max_incoming: int = 16,
    ) -> None:  # fmt: skip
        self.max_file_size = max_file_size
        self.window = window
        self.max_per_user = max_per_user
        self.offer_timeout = offer_timeout
        self.idle_timeout = idle_timeout
        self.max_incoming = max_incoming
        self._sweeper: asyncio.Task[None] | None = None
        self._expiries: set[asyncio.Task[None]] = set()
        self._transfers: dict[str, Transfer] = {}
        #: In a cluster, this node's id starts every id it gives a transfer, so a
        #: recipient's node knows where to forward that recipient's requests (redis_hub.py).
        self.id_prefix = ""
        #: File data for transfers of other nodes, per user: their node's flow control
        #: decides, this budget bounds what a peer can make this node forward.
        self._forwarded = KeyedBuckets(FORWARDED_PER_SECOND, FORWARDED_PER_SECOND * 2)
        #: Recently closed transfer id -> late chunks and acks still exempt from the rate limit.
        self._closed: OrderedDict[str, int] = OrderedDict()

    # --- lookups --------------------------------------------------------------------

    def paced(self, envelope: Envelope, user: str) -> bool:
        """Whether flow control bounds this ``file_chunk`` or ``file_ack`` from ``user``:
        a chunk from the transfer's sender that fits its window, an ack from a recipient
        still receiving that acknowledges new bytes, or the bounded late arrivals of a
        transfer that just ended. Anything else is metered like any request (review M3:
        acks for a self-made transfer, or from a third user, went unmetered)."""
        transfer = self._transfers.get(envelope["id"])
        if transfer is None:
            if self.id_prefix and not envelope["id"].startswith(self.id_prefix):
                return self._forwarded.take(key(user), time.monotonic())
            return self.is_live(envelope["id"])
        me = key(user)
        if envelope.type == "file_chunk":
            return key(transfer.sender) == me and transfer.started and transfer.flow.sender.fits(
                envelope["offset"], len(envelope.body)
            )
        return transfer.flow.paced_ack(me, envelope["received"])

    def is_live(self, transfer_id: str) -> bool:
        """Whether file data for this id is paced by flow control (so exempt from the rate
        limit): the transfer is in flight, or it has just ended and what its window let
        the sender and recipients have in flight may still arrive. That late allowance is
        bounded (``_late_allowance``) and spent by each late chunk or ack; after it, or for
        an id never seen, requests are metered like any other."""
        return transfer_id in self._transfers or self._closed.get(transfer_id, 0) > 0

    def _spend_late(self, transfer_id: str) -> None:
        if self._closed.get(transfer_id, 0) > 0:
            self._closed[transfer_id] -= 1

    def _count_for(self, user: str) -> int:
        """Transfers ``user`` is sending: what others send them never counts here (review
        M10: eight idle offers to a user blocked that user's own /file)."""
        me = key(user)
        return sum(1 for t in self._transfers.values() if key(t.sender) == me)

    def _incoming_for(self, user: str) -> int:
        me = key(user)
        return sum(1 for t in self._transfers.values() if me in t.pending or me in t.receiving)

    def _get(self, transfer_id: str) -> Transfer | None:
        transfer = self._transfers.get(transfer_id)
        if transfer is None and transfer_id not in self._closed:
            raise RequestError(ErrorCode.BAD_TRANSFER, detail=f"no transfer {transfer_id}")
        return transfer

    def _as_sender(self, transfer_id: str, user: str) -> Transfer | None:
        transfer = self._get(transfer_id)
        if transfer is not None and key(transfer.sender) != key(user):
            raise RequestError(ErrorCode.BAD_TRANSFER, detail=f"you are not sending transfer {transfer_id}")
        return transfer

    # --- sender side ------------------------------------------------------------------

    async def offer(self, ctx: RequestContext, env: Envelope) -> None:
        size: int = env["size"]
        to, group_name = env.get("to"), env.get("group")
        if (to is None) == (group_name is None):
            detail = "file_offer needs exactly one of 'to' and 'group'"
            raise RequestError(ErrorCode.BAD_REQUEST, detail=detail)
        if size > self.max_file_size:
            raise RequestError(ErrorCode.FILE_TOO_LARGE, limit=self.max_file_size)
        if self._count_for(ctx.user) >= self.max_per_user:
            raise RequestError(ErrorCode.TOO_MANY_TRANSFERS, limit=self.max_per_user)
        if to is not None:
            recipients = [await ctx.online_user(to)]
            group = None
            if self._incoming_for(recipients[0]) >= self.max_incoming:
                raise RequestError(ErrorCode.TOO_MANY_TRANSFERS, user=recipients[0], limit=self.max_incoming)
        else:
            group = ctx.groups.member_group(group_name, ctx.user)
            # By key: a member may be online under another spelling ("Bob" vs "bob").
            online = {key(name): name for name in await ctx.hub.online()}
            recipients = [
                online[key(m)] for m in group.other_members(ctx.user)
                if key(m) in online and self._incoming_for(m) < self.max_incoming
            ][:MAX_LIST_ITEMS]  # one envelope names at most this many (file_offered)
            if not recipients:
                raise RequestError(ErrorCode.NO_RECIPIENTS, group=group.name)
        transfer = Transfer(
            id=self.id_prefix + secrets.token_hex(8), sender=ctx.user, name=env["name"], size=size,
            group=group.name if group else None, pending={key(r): r for r in recipients},
            flow=RelayWindow.new(size, self.window),
        )
        transfer.ctx = ctx
        transfer.last_progress = asyncio.get_running_loop().time()
        self._transfers[transfer.id] = transfer
        self._sweep_idle()
        transfer.offer_timer = asyncio.get_running_loop().call_later(
            self.offer_timeout, self._expire_offer, ctx, transfer.id
        )
        ctx.reply("file_offered", id=transfer.id, recipients=recipients)
        incoming: dict[str, Any] = {
            "id": transfer.id, "sender": ctx.user, "name": transfer.name, "size": size
        }
        if group is not None:
            incoming["group"] = group.name
        await ctx.notify(recipients, "file_incoming", **incoming)

    async def chunk(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_sender(env["id"], ctx.user)
        if transfer is None:
            self._spend_late(env["id"])
            return  # a chunk already in flight when the transfer ended
        offset, data = env["offset"], env.body
        try:
            if not transfer.started or transfer.ended:
                raise FlowError("data sent outside the transfer")
            transfer.flow.sender.chunk(offset, len(data))
        except FlowError as exc:
            await self._abort(ctx, transfer, f"the sender broke the protocol ({exc})")
            raise RequestError(ErrorCode.BAD_TRANSFER, detail=str(exc)) from None
        transfer.chunks += 1
        transfer.last_progress = asyncio.get_running_loop().time()
        payload = encode_event("file_chunk", body=data, id=transfer.id, offset=offset)
        await ctx.hub.send(transfer.recipient_names(), payload, bulk=True)

    async def end(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_sender(env["id"], ctx.user)
        if transfer is None:
            ctx.reply("ok")
            return
        if not transfer.started or transfer.ended or not transfer.flow.sender.all_sent:
            await self._abort(ctx, transfer, "the sender ended the transfer early")
            raise RequestError(ErrorCode.BAD_TRANSFER, detail="file_end before all data was sent")
        transfer.ended = True
        await ctx.notify(transfer.recipient_names(), "file_end", id=transfer.id, sha256=env["sha256"])
        ctx.reply("ok")

    # --- recipient side ---------------------------------------------------------------

    def _as_recipient(self, transfer_id: str, user: str, pending: bool) -> Transfer | None:
        transfer = self._get(transfer_id)
        if transfer is None:
            return None
        if key(user) not in (transfer.pending if pending else transfer.receiving):
            detail = f"transfer {transfer_id} is not waiting for you"
            raise RequestError(ErrorCode.BAD_TRANSFER, detail=detail)
        return transfer

    async def accept(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_recipient(env["id"], ctx.user, pending=True)
        if transfer is not None:
            name = transfer.pending.pop(key(ctx.user))
            transfer.receiving[key(ctx.user)] = name
            transfer.flow.add(key(ctx.user))
            await self._progress(ctx, transfer)
        ctx.reply("ok")

    async def decline(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_recipient(env["id"], ctx.user, pending=True)
        if transfer is not None:
            name = transfer.pending.pop(key(ctx.user))
            transfer.failed.append({"name": name, "detail": env.get("detail") or "declined"})
            await self._progress(ctx, transfer)
        ctx.reply("ok")

    async def ack(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_recipient(env["id"], ctx.user, pending=False)
        if transfer is None:
            self._spend_late(env["id"])
            return  # data acknowledged after the transfer ended
        try:
            transfer.flow.ack(key(ctx.user), env["received"])
        except FlowError as exc:
            raise RequestError(ErrorCode.BAD_TRANSFER, detail=str(exc)) from None
        transfer.last_progress = asyncio.get_running_loop().time()
        await self._progress(ctx, transfer)

    async def done(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_recipient(env["id"], ctx.user, pending=False)
        if transfer is not None:
            if not transfer.ended:
                raise RequestError(ErrorCode.BAD_TRANSFER, detail="file_done before file_end")
            name = transfer.receiving.pop(key(ctx.user))
            transfer.flow.drop(key(ctx.user))
            transfer.delivered.append(name)
            await self._progress(ctx, transfer)
        ctx.reply("ok")

    async def failed(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._as_recipient(env["id"], ctx.user, pending=False)
        if transfer is not None:
            name = transfer.receiving.pop(key(ctx.user))
            transfer.flow.drop(key(ctx.user))
            transfer.failed.append({"name": name, "detail": env["detail"]})
            await self._progress(ctx, transfer)
        ctx.reply("ok")

    # --- either side ------------------------------------------------------------------

    async def cancel(self, ctx: RequestContext, env: Envelope) -> None:
        transfer = self._get(env["id"])
        if transfer is not None:
            me = key(ctx.user)
            if me == key(transfer.sender):
                await self._abort(ctx, transfer, env.get("detail") or "cancelled by the sender")
            elif me in transfer.receiving or me in transfer.pending:
                await self._drop_recipient(ctx, transfer, me, env.get("detail") or "cancelled")
            else:
                raise RequestError(ErrorCode.BAD_TRANSFER, detail=f"transfer {transfer.id} is not yours")
        ctx.reply("ok")

    async def disconnected(self, ctx: RequestContext) -> None:
        """``ctx.user`` is gone: abort what they send, count them failed where they receive."""
        me = key(ctx.user)
        for transfer in list(self._transfers.values()):
            if transfer.id not in self._transfers:
                continue  # ended while an earlier one was being handled (the hub may await)
            if key(transfer.sender) == me:
                await self._abort(ctx, transfer, "the sender disconnected")
            elif me in transfer.receiving or me in transfer.pending:
                await self._drop_recipient(ctx, transfer, me, "disconnected")

    # --- bookkeeping ------------------------------------------------------------------

    async def _drop_recipient(self, ctx: RequestContext, transfer: Transfer, who: str, detail: str) -> None:
        entry = transfer.receiving.pop(who, None)
        transfer.flow.drop(who)
        name = entry if entry is not None else transfer.pending.pop(who)
        transfer.failed.append({"name": name, "detail": detail})
        await self._progress(ctx, transfer)

    async def _progress(self, ctx: RequestContext, transfer: Transfer) -> None:
        """Start the data, advance the sender's window, or finish, as the state allows."""
        if transfer.pending:
            return  # some recipients have not answered the offer yet
        if not transfer.receiving:
            # Everyone has stored it, failed, declined or gone: report to the sender.
            self._close(transfer)
            result = encode_event(
                "file_result", id=transfer.id, delivered=transfer.delivered, failed=transfer.failed
            )
            await ctx.hub.send([transfer.sender], result)
            return
        if not transfer.started:
            transfer.started = True
            transfer.last_progress = asyncio.get_running_loop().time()
            go = encode_event("file_go", id=transfer.id, window=self.window)
            await ctx.hub.send([transfer.sender], go)
            return
        acked = transfer.flow.sender.acked
        if acked > transfer.told:
            transfer.told = acked
            ack = encode_event("file_ack", id=transfer.id, received=acked)
            await ctx.hub.send([transfer.sender], ack)

    async def _abort(self, ctx: RequestContext, transfer: Transfer, detail: str) -> None:
        """End the transfer for every recipient (the sender caused it, so knows)."""
        self._close(transfer)
        recipients = [*transfer.recipient_names(), *transfer.pending.values()]
        await ctx.hub.send(recipients, encode_event("file_aborted", id=transfer.id, detail=detail))

    def _expire_offer(self, ctx: RequestContext, transfer_id: str) -> None:
        """Recipients who have not answered the offer in time count as failed."""
        transfer = self._transfers.get(transfer_id)
        if transfer is None or not transfer.pending:
            return

        async def expire() -> None:
            silent = dict(transfer.pending)
            expired = encode_event("file_aborted", id=transfer.id, detail="the offer expired")
            await ctx.hub.send(silent.values(), expired)
            for who in silent:
                if transfer.id in self._transfers:
                    await self._drop_recipient(ctx, transfer, who, "no answer to the offer")

        task = asyncio.get_running_loop().create_task(expire())
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    def _sweep_idle(self) -> None:
        """Check for idle transfers while any exist (the task ends with the last one)."""
        if self._sweeper is None and self.idle_timeout > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._abort_idle())

    async def _abort_idle(self) -> None:
        """Abort started transfers with no chunk or ack for ``idle_timeout`` seconds, for
        both sides: a transfer cannot hold its slots (and the recipients' open files)
        forever by stalling (review M10)."""
        loop = asyncio.get_running_loop()
        try:
            while self._transfers:
                await asyncio.sleep(max(0.05, self.idle_timeout / 4))
                now = loop.time()
                for transfer in list(self._transfers.values()):
                    idle = transfer.started and now - transfer.last_progress > self.idle_timeout
                    if idle and transfer.id in self._transfers and transfer.ctx is not None:
                        await self._abort(transfer.ctx, transfer, "the transfer stalled")
                        failed = [{"name": name, "detail": "the transfer stalled"}
                                  for name in transfer.recipient_names()]  # fmt: skip
                        result = encode_event("file_result", id=transfer.id, delivered=transfer.delivered,
                                              failed=[*transfer.failed, *failed])  # fmt: skip
                        await transfer.ctx.hub.send([transfer.sender], result)
        finally:
            self._sweeper = None

    def _close(self, transfer: Transfer) -> None:
        if transfer.offer_timer is not None:
            transfer.offer_timer.cancel()
        self._transfers.pop(transfer.id, None)
        self._closed[transfer.id] = self._late_allowance(transfer)
        while len(self._closed) > _RECENTLY_CLOSED:
            self._closed.popitem(last=False)

    def _late_allowance(self, transfer: Transfer) -> int:
        """How many chunks and acks may still arrive once ``transfer`` ends: a window's
        worth of chunks (at this transfer's average chunk size) from the sender, and an
        ack for each from every recipient still receiving (when the sender went away,
        the data already relayed to them is still acknowledged). No more than flow
        control let through unmetered while the transfer was live."""
        average = transfer.flow.sender.sent / transfer.chunks if transfer.chunks else self.window
        per_window = math.ceil(self.window / max(1.0, average)) + 1
        return (len(transfer.receiving) + 1) * per_window
