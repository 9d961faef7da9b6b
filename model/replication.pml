/*
 * The replication protocol of the TMR license server (DESIGN.md section 5), as a Promela
 * model for the spin model checker.  `model/run.sh` (make test-model) checks it.
 *
 * What is modelled (abstract, one product):
 *   - two TMR servers (sans-I/O `Leader`), three backends (`Acceptor`);
 *   - fencing epochs (counter, server), ordered, encoded as counter*2 + server;
 *   - prepare/promise, adoption of the best version among a quorum of promises, snapshot at
 *     seq 0, ACTIVE once two snapshots were answered, accept/accepted of log entries, commit
 *     once two backends acknowledged, snapshots to backends that lost their place;
 *   - fencing: a backend with a higher promise answers Rejected;
 *   - crashes and restarts: a server loses everything but its epoch counter; a backend's
 *     state is all durable, so its crash only loses the requests it had not answered;
 *   - lost and reordered messages: each server->backend and backend->server link is a bag
 *     of at most two messages received in any order; any message may be lost;
 *   - a license update: the backends go from TMR ID #1 (LQ 2) to #2 (LQ 3), one at a time;
 *   - commit knowledge (docs/design.md section 6): an ACCEPT carries the leader's committed
 *     version, and so does a commit notice (an ACCEPT without an entry, answered NOTICED); a
 *     backend keeps the highest one durably (FORGETS > 0: restarts that forget it, the former
 *     memory-only design, a seeded bug), acknowledges it in the reply (its seq + 1 in the
 *     reply's fifth field) and reports it in its PROMISE;
 *   - during an update (the table above some backend's LQ) an entry with a grant is flagged
 *     notice; a backend marks the grants it takes from a flagged entry (`bmark`, with the
 *     entry's version `hgver`) and reports the marks in its PROMISE (above the table's bits);
 *     the leader answers a flagged grant only once two backends acknowledged knowing its
 *     commit (`swt`, `sknw`, answer_durable); a new leader whose promises do not know the
 *     adopted table committed drops the marked grants above every known commit (`gtko`:
 *     exempt from P3, not from P4);
 *     a leader whose promises say the table it adopts is committed sends its seq-0 snapshot
 *     flagged committed; a snapshot flagged committed is recorded whatever the backend's LQ
 *     (committed state is not a vote), and the leader's later snapshots carry its committed
 *     table at its committed seq, flagged.
 *
 * Handles carry one seat each and are named 0..NH-1; a handle id is never reused (the code
 * names them h<counter>-<server>-<n>), so a handle is granted at most once in a run.
 * A handle table is a bit mask, seats = bits set.
 *
 * Properties (assertions; see the comments at each assert):
 *   P1 committed seats <= effective LQ (licensing/effective.py: second-highest TMR ID among
 *      the backends' valid copies, and the LQ of that copy);
 *   P2 no two leader terms commit in the same epoch; no log version holds two tables;
 *   P3 a committed grant is never lost: the table a leader adopts in epoch e holds every
 *      handle committed (in a table) in an epoch below e unless some leader proposed its
 *      release, and no handle whose release was committed below e; checked when the leader
 *      adopts, and again for it when an older epoch's commit becomes known later;
 *   P4 an answered grant is never lost: whenever a leader commits, its committed table holds
 *      every handle some leader answered (its grant committed) unless a release was proposed;
 *   LIVE (compiled with -DLIVENESS): with finitely many faults, eventually forever some
 *      server is ACTIVE in the newest epoch with every entry it proposed committed.
 *
 * Aborting a grant in doubt (docs/design.md section 6): while the leader's uncommitted entry is a
 * grant that some backend refused (above its own LQ), the leader may abort it: it proposes, at
 * the next seq, a snapshot of the table without that grant (the committed table: one op per
 * entry here) and never answers the grant; acknowledgements of the aborted seq no longer count
 * (`svoid`).  The code aborts when the backends that could still complete the quorum are down,
 * or when the entry waited half of backend_timeout; the model allows it at any time after a
 * refusal (time is not modelled), which covers both.  STOPS backends may stop for good (they
 * drop what they receive, so the leader's timeouts fire): with one stopped mid-update, LIVE
 * holds only because of the abort (NO_ABORT makes it fail).
 *
 * Seeded bugs (each must make spin report an error; tests/model/ checks that it does):
 *   BUG_ACCEPT_BELOW_PROMISE  the acceptor applies an ACCEPT whose epoch is below its promise
 *   BUG_COMMIT_ONE_ACK        the leader commits an entry with one acknowledgement
 *   BUG_VOLATILE_COUNTER      a server forgets its epoch counter when it crashes
 *   BUG_NO_LQ_CHECK           the acceptor does not check its own LQ (with a leader that
 *                             admits above the effective LQ)
 *   BUG_REFUSE_SNAPSHOT       (liveness) the acceptors refuse every snapshot
 *   BUG_ADOPT_AS_COMMITTED    the leader flags every adopted table committed (with a leader
 *                             that admits above the effective LQ, OVER_ADMIT)
 *   BUG_KNOW_ON_ACCEPT        the acceptor takes every entry it accepts as known committed
 *                             (with OVER_ADMIT)
 *   BUG_ABORT_ANSWERED        the leader aborts its latest grant also once it committed (and was
 *                             answered): P4
 *   BUG_ANSWER_ABORTED        the leader answers the grant it aborts: P4
 *   NO_ABORT                  (liveness, with STOPS) no abort: a grant above a lagging backend's
 *                             LQ blocks the log when the other up-to-date backend stops
 *   BUG_ANSWER_AT_COMMIT      (TAKEOVER_WINDOW) a flagged grant is answered at its commit: P4
 *   BUG_ABORT_KNOWN           (TAKEOVER_WINDOW) a new leader drops marked grants also when they
 *                             are known committed: P4
 *   FORGETS=1                 (TAKEOVER_WINDOW) a restart forgets the commit knowledge: P4
 *   NO_TAKEOVER_ABORT         (TAKEOVER_WINDOW, liveness, STOPS=1) a new leader keeps the
 *                             unanswered grants: the backend on the old copy refuses its table
 * TAKEOVER_WINDOW: the update of ABORT_SCENARIO with commit notices; server 0 leads and may
 * crash at any point (after a commit and before any notice among them); then server 1 takes
 * over; for liveness, backend 1 may stop for good once server 0 crashed.
 * ABORT_SCENARIO: an update under way from the start (backends 0 and 1 hold #2, backend 2 #1);
 * for safety, server 0 leads and, once it aborted a grant and crashed, server 1 takes over; for
 * liveness, server 0 alone runs, and backend 1 may stop while the grant is in flight.
 * OVER_ADMIT alone (the leader admits up to LQ_NEW, the acceptors still check) must stay
 * safe: the acceptors' own LQ check is what keeps P1.
 */

#ifdef TAKEOVER_WINDOW
#define ABORT_SCENARIO  /* the same update under way; see TAKEOVER_WINDOW above */
#endif
#ifndef NH
#define NH 3            /* handles (one seat each): seat counts 0..3 */
#endif
#ifndef MAXC
#define MAXC 3          /* highest epoch counter */
#endif
#ifndef MAXSEQ
#define MAXSEQ 2        /* log entries per term after the snapshot at seq 0 */
#endif
#ifndef LOSSES
#define LOSSES 2        /* messages lost (a full link loses what is sent on top) */
#endif
#ifndef FORGETS
#define FORGETS 0       /* backend restarts that forget their commit knowledge: the old
                           memory-only knowledge, a seeded bug now that it is durable */
#endif
#ifndef SCRASHES
#define SCRASHES 1      /* server crashes */
#endif
#ifndef STEALS
#define STEALS 1        /* LIVENESS only: promotes while another server leads */
#endif
#ifndef STOPS
#define STOPS 0         /* backends that stop for good */
#endif

#define NS 2
#define NB 3
#ifndef LQ_OLD
#define LQ_OLD 2        /* LQ of license #1 */
#endif
#ifndef LQ_NEW
#define LQ_NEW 3        /* LQ of license #2 */
#endif
#define NONE 255
#define NFLAG 32        /* an ACCEPT's entry is flagged `notice` (Accept.notice) */
#define NOTICED 3       /* EntryStatus of the answer to a commit notice (code: an empty OK) */

mtype = { PREPARE, ACCEPT, SNAPSHOT, PROMISE, ACCEPTED, REJECTED };

/* EntryStatus */
#define OK 0
#define NEED_SNAPSHOT 1
#define REFUSED 2

/* Role (TAKEOVER is split into its phases "prepare" and "sync") */
#define STANDBY 0
#define PREPARING 1
#define SYNCING 2
#define ACTIVE 3
#define FENCED 4

#define EP(c, s) ((c) * 2 + (s))
#define CTR(e) ((e) / 2)
#define VER(e, q) ((e) * 8 + (q))
#define VEP(v) ((v) / 8)
#define VSEQ(v) ((v) % 8)
#define BIT(i) (1 << (i))
#define SEATS(t) (((t) & 1) + (((t) >> 1) & 1) + (((t) >> 2) & 1) + (((t) >> 3) & 1))
#define LINK(s, b) ((s) * NB + (b))

/* Ops: 1..NH grant handle op-1, NH+1..2NH release handle op-NH-1; ABORT_OP: the snapshot
 * of an abort (the leader's table at that seq, proposed as a SNAPSHOT, not an ACCEPT) */
#define GRANT_OP(h) ((h) + 1)
#define RELEASE_OP(h) ((h) + 1 + NH)
#define IS_GRANT(op) ((op) >= 1 && (op) <= NH)
#define OP_HANDLE(op) (IS_GRANT(op) -> (op) - 1 : (op) - 1 - NH)
#define APPLY(t, op) (IS_GRANT(op) -> ((t) | BIT(OP_HANDLE(op))) : ((t) & ~BIT(OP_HANDLE(op))))
#define ABORT_OP (2 * NH + 1)
#define IS_RELEASE(op) ((op) > NH && (op) <= 2 * NH)

/* ---------------------------------------------------------------- network
 * req[LINK(s,b)]: server s -> backend b; rep[LINK(s,b)]: backend b -> server s.
 * Requests: kind, epoch, seq, val (op of an ACCEPT, 0 in a commit notice; table of a
 *           SNAPSHOT, + CFLAG when flagged committed), known (an ACCEPT's committed version).
 * Replies:  PROMISE(epoch, version, table, known commit), ACCEPTED(epoch, seq, status),
 *           REJECTED(promised). */
#ifndef CAP
#define CAP 1           /* messages in flight per link and direction */
#endif
chan req[NS * NB] = [CAP] of { mtype, byte, byte, byte, byte };
chan rep[NS * NB] = [CAP] of { mtype, byte, byte, byte, byte };
#define CFLAG 16        /* a SNAPSHOT's table is committed state */

/* ---------------------------------------------------------------- backends (durable) */
byte bprom[NB];     /* AcceptorState.promised */
byte bver[NB];      /* ProductLog.version = VER(epoch, seq) */
byte btab[NB];      /* ProductLog.handles */
bit bnew[NB];       /* LicenseInfo: 0 = #1 (LQ_OLD), 1 = #2 (LQ_NEW); always valid */
byte bstop;         /* backends stopped for good (bit mask): they drop what they receive */
byte bkc[NB];       /* Acceptor.known_commit (durable, AcceptorState.known; 0: none) */
byte bmark[NB];     /* ProductLog.marked: handles taken from an entry flagged notice, bit mask */
byte hgver[NH];     /* the version of the entry that granted each handle (a handle is granted
                       in one entry only: the version a backend marks it with, carried in
                       the ACCEPT; 0: not granted) */
#define LQ(b) (bnew[b] -> LQ_NEW : LQ_OLD)
/* effective_version(): available with >= 2 copies (always here); effective TMR ID = the
 * second-highest ID, i.e. #2 once two backends hold it; its LQ. */
#define EFF_LQ ((bnew[0] + bnew[1] + bnew[2] >= 2) -> LQ_NEW : LQ_OLD)

/* ---------------------------------------------------------------- servers */
byte slc[NS];       /* Leader.last_counter: persisted before anything is sent */
byte role[NS];      /* Leader.role */
byte sep[NS];       /* Leader.epoch */
byte spr[NS];       /* backends whose Promise arrived (_Backend.promise), bit mask */
byte sbest[NS];     /* best version among the promises (_adopt) */
byte sbtab[NS];     /* ... and its table */
byte stab[NS];      /* _Product.handles (the leader's table, uncommitted ops included) */
byte sseq[NS];      /* _Product.seq */
short scom[NS];     /* _Product.committed (-1: the snapshot at seq 0 is not committed) */
byte slog[NS * (MAXSEQ + 1)];   /* _Product.log: op of entry seq */
byte sack[NS * NB]; /* _Backend.acked (NONE: unknown) */
bit sinf[NS * NB];  /* _Backend.inflight: one ACCEPT/SNAPSHOT in flight per backend */
byte ssnap[NS];     /* _Backend.snapshot_acked, bit mask */
byte sbkc[NS];      /* the highest known commit among the promises */
bit sadc[NS];       /* _Product.adopted_committed */
byte stold[NS * NB];/* _Backend.told: committed seq + 1 it was told (0: none) */
byte sref[NS];      /* backends that refused the uncommitted entry (bit mask; _Backend.refusal) */
byte svoid[NS];     /* the seq of the aborted entry (0: none): its acks do not count */
byte snot[NS];      /* Product.notice: the flagged seqs (bit mask) */
byte swt[NS];       /* committed flagged seqs whose grant is not answered yet (bit mask) */
byte sknw[NS * NB]; /* _Backend.known: committed seq + 1 it acknowledged knowing (0: none) */
byte smk[NS];       /* the marks of the promises (union, bit mask) */

/* ---------------------------------------------------------------- ghost state (checks) */
byte hused;         /* handles whose grant was proposed (ids are never reused) */
byte ghep[NH];      /* per handle: the lowest epoch that committed a table holding it */
byte grel;          /* handles whose release some leader proposed */
byte grcep[NH];     /* per handle: the lowest epoch that committed its release */
byte ghans[NH];     /* per handle: the lowest epoch whose leader answered its grant (0: none) */
byte gabort;        /* grants aborted so far */
byte gtko;          /* handles a new leader aborted at its takeover (never answered) */
byte sterm[NS];     /* number of this server's terms (promotes) */
byte gcommit[2 * MAXC + 2];     /* per epoch: server*16 + term that committed in it, + 1 */
byte gtab[VER(2 * MAXC + 2, 0)];/* per version: the table a backend holds at it, + 1 */
byte gloss = LOSSES;
byte gforget = FORGETS;
byte gscrash = SCRASHES;
byte gstop = STOPS;
#ifdef LIVENESS
byte gsteal = STEALS;
#endif

/* temporaries, only used inside atomic sequences that never block midway (not part of the
 * state; a breadth-first search, -DBFS_SEARCH, needs them in it) */
#ifdef BFS_SEARCH
#define hidden
#endif
hidden mtype tk;
hidden byte te, tq, tv, tn, tx, ty, tw;
hidden mtype k;
hidden byte e, q, v, n;  /* the message being handled */
hidden short ta, tb, tc, td, tf;

#define ROLE_LEADS(s) (role[s] == PREPARING || role[s] == SYNCING || role[s] == ACTIVE)
#define NEWEST(s) (sep[s] >= bprom[0] && sep[s] >= bprom[1] && sep[s] >= bprom[2])
#define CURRENT_LEADER (ROLE_LEADS(0) && NEWEST(0) || ROLE_LEADS(1) && NEWEST(1))
#define DONE(s) (role[s] == ACTIVE && scom[s] == sseq[s] && NEWEST(s))

#ifdef SPURIOUS
#define LOST(c) true    /* timeouts may fire at any time (a slow backend) */
#else
/* A request or its reply is lost (not in flight): only then does a timeout fire. */
#define LOST(c) (empty(req[c]) && empty(rep[c]))
#endif

/* Receive one of the (at most two) messages of a bag, in any order. */
inline take_any(ch, k, e, q, v, n) {
    if
    :: ch?k, e, q, v, n
    :: CAP > 1 && len(ch) == 2 ->
        ch?tk, te, tq, tv, tn; ch?k, e, q, v, n; ch!tk, te, tq, tv, tn;
        tk = 0; te = 0; tq = 0; tv = 0; tn = 0
    fi
}

/* Send, or lose the message when the bag is full. */
inline send(ch, k, e, q, v, n) {
    if
    :: nfull(ch) -> ch!k, e, q, v, n
    :: full(ch) -> skip
    fi
}

/* ================================================================ the acceptor */

/* A backend wrote its log at version ver holding table t: no version holds two tables. */
inline record_version(ver, t) {
    assert(gtab[ver] == 0 || gtab[ver] == t + 1);    /* P2 */
    gtab[ver] = t + 1
}

/* Acceptor.handle for request (k, e, q, v, n) from server s at backend b. */
inline acceptor_step(s, b, k, e, q, v, n) {
    if
#ifdef BUG_ACCEPT_BELOW_PROMISE
    :: e < bprom[b] && k != ACCEPT ->
#else
    :: e < bprom[b] ->
#endif
        send(rep[LINK(s, b)], REJECTED, bprom[b], 0, 0, 0)
    :: else ->
        if
        :: e > bprom[b] -> bprom[b] = e     /* _promise_write: PREPARE, ACCEPT, SNAPSHOT */
        :: else -> skip
        fi;
        if
        :: k == PREPARE ->                  /* the marks ride above the table's bits */
            send(rep[LINK(s, b)], PROMISE, e, bver[b], btab[b] | (bmark[b] << 4), bkc[b])
        :: k == ACCEPT && v == 0 ->         /* a commit notice: no entry; durable, answered */
            bkc[b] = (n > bkc[b] -> n : bkc[b]);
            tw = (VEP(n) == e && n > 0 -> VSEQ(n) + 1 : 0);
            send(rep[LINK(s, b)], ACCEPTED, e, 0, NOTICED, tw);
            tw = 0
        :: k == ACCEPT && v != 0 ->         /* _accept, one entry (its known commit durable) */
            bkc[b] = (n > bkc[b] -> n : bkc[b]);
            tw = (VEP(n) == e && n > 0 -> VSEQ(n) + 1 : 0);     /* the known it acknowledges */
            if
            :: VEP(bver[b]) == e && q <= VSEQ(bver[b]) ->
                send(rep[LINK(s, b)], ACCEPTED, e, VSEQ(bver[b]), OK, tw)   /* duplicate */
            :: VEP(bver[b]) != e || q != VSEQ(bver[b]) + 1 ->
                send(rep[LINK(s, b)], ACCEPTED, e, VSEQ(bver[b]), NEED_SNAPSHOT, tw)
            :: else ->
                ty = v & ~NFLAG;
                tx = APPLY(btab[b], ty);
#ifdef BUG_NO_LQ_CHECK
                if
                :: false ->
#else
                if
                :: SEATS(tx) > SEATS(btab[b]) && SEATS(tx) > LQ(b) ->     /* _check_ops */
#endif
                    send(rep[LINK(s, b)], ACCEPTED, e, VSEQ(bver[b]), REFUSED, tw)
                :: else ->
                    /* _mark: a new grant of a flagged entry is marked; a release unmarks */
                    if
                    :: (v & NFLAG) && IS_GRANT(ty) && (btab[b] & BIT(OP_HANDLE(ty))) == 0 ->
                        bmark[b] = bmark[b] | BIT(OP_HANDLE(ty))
                    :: IS_RELEASE(ty) -> bmark[b] = bmark[b] & ~BIT(OP_HANDLE(ty))
                    :: else -> skip
                    fi;
                    btab[b] = tx; bver[b] = VER(e, q);
                    record_version(bver[b], btab[b]);
#ifdef BUG_KNOW_ON_ACCEPT
                    bkc[b] = bver[b];
#endif
                    send(rep[LINK(s, b)], ACCEPTED, e, q, OK, tw)
                fi;
                tx = 0; ty = 0
            fi;
            tw = 0
        :: k == SNAPSHOT ->                 /* _snapshot: replaces the table */
            if
            :: v & CFLAG ->                 /* committed state: its version is known */
                bkc[b] = (VER(e, q) > bkc[b] -> VER(e, q) : bkc[b])
            :: else -> skip
            fi;
            if
            :: VEP(bver[b]) == e && q <= VSEQ(bver[b]) ->
                send(rep[LINK(s, b)], ACCEPTED, e, VSEQ(bver[b]), OK, 0)   /* stale or duplicate */
            :: else ->
                tx = (LQ(b) > SEATS(btab[b]) -> LQ(b) : SEATS(btab[b]));
#if defined(BUG_NO_LQ_CHECK)
                if
                :: false ->
#elif defined(BUG_REFUSE_SNAPSHOT)
                if
                :: true ->                  /* refuses every snapshot */
#else
                if
                /* may keep, never grow, a count above LQ; committed state is recorded */
                :: (v & CFLAG) == 0 && SEATS(v) > tx ->
#endif
                    send(rep[LINK(s, b)], ACCEPTED, e, VSEQ(bver[b]), REFUSED, 0)
                :: else ->
                    btab[b] = v & ~CFLAG; bver[b] = VER(e, q);
                    bmark[b] = bmark[b] & btab[b];  /* a kept record keeps its mark */
                    record_version(bver[b], btab[b]);
                    tw = ((v & CFLAG) -> q + 1 : 0);
                    send(rep[LINK(s, b)], ACCEPTED, e, q, OK, tw);
                    tw = 0
                fi;
                tx = 0
            fi
        fi
    fi
}

/* One backend's handling of one server's link (a process per link, for fairness). */
proctype BackendLink(byte s; byte b) {
end:
    do
    :: atomic {
        nempty(req[LINK(s, b)]) ->
        take_any(req[LINK(s, b)], k, e, q, v, n);
        if
        :: bstop & BIT(b) -> skip       /* stopped: nothing is handled or answered */
        :: else -> acceptor_step(s, b, k, e, q, v, n)
        fi;
        k = 0; e = 0; q = 0; v = 0; n = 0
    }
    od
}

/* ================================================================ the leader */

inline reset_term(s) {          /* Leader._reset_term */
    spr[s] = 0; sbest[s] = 0; sbtab[s] = 0; stab[s] = 0; sseq[s] = 0; scom[s] = -1;
    ssnap[s] = 0; sbkc[s] = 0; sadc[s] = 0; sref[s] = 0; svoid[s] = 0;
    snot[s] = 0; swt[s] = 0; smk[s] = 0;
    tx = 0;
    do
    :: tx <= MAXSEQ -> slog[s * (MAXSEQ + 1) + tx] = 0; tx++
    :: else -> break
    od;
    tx = 0;
    do
    :: tx < NB ->
        sack[LINK(s, tx)] = NONE; sinf[LINK(s, tx)] = 0; stold[LINK(s, tx)] = 0;
        sknw[LINK(s, tx)] = 0; tx++
    :: else -> break
    od;
    tx = 0
}

/* Leader.promote + the probe phase + _maybe_prepare: a new epoch above every counter seen. */
inline promote(s) {
#ifdef LIVENESS
    /* probes report the backends' promises: max counter + 1 (Leader._maybe_prepare) */
    tx = slc[s];
    tx = (CTR(bprom[0]) > tx -> CTR(bprom[0]) : tx);
    tx = (CTR(bprom[1]) > tx -> CTR(bprom[1]) : tx);
    tx = (CTR(bprom[2]) > tx -> CTR(bprom[2]) : tx);
    tx = tx + 1;
#else
    /* any counter above the persisted one (what probes report only raises it) */
    tx = slc[s] + 1;
    do
    :: break
    :: tx < MAXC -> tx++
    od;
#endif
    slc[s] = tx;                /* persist_counter */
    reset_term(s);
    sep[s] = EP(slc[s], s);
    sterm[s]++;
    role[s] = PREPARING;
    send(req[LINK(s, 0)], PREPARE, sep[s], 0, 0, 0);
    send(req[LINK(s, 1)], PREPARE, sep[s], 0, 0, 0);
    send(req[LINK(s, 2)], PREPARE, sep[s], 0, 0, 0)
}

inline fence(s) {               /* Leader._fence */
    role[s] = FENCED; sep[s] = 0; reset_term(s)
}

inline crash(s) {               /* kill -9 and restart: only the epoch counter survives */
    role[s] = STANDBY; sep[s] = 0; reset_term(s);
#ifdef BUG_VOLATILE_COUNTER
    slc[s] = 0;
#endif
#ifdef LIVENESS
    /* its connections close: what it had in flight is gone */
    tx = 0;
    do
    :: tx < NB ->
        do
        :: nempty(req[LINK(s, tx)]) -> req[LINK(s, tx)]?tk, te, tq, tv, tn
        :: empty(req[LINK(s, tx)]) -> break
        od;
        do
        :: nempty(rep[LINK(s, tx)]) -> rep[LINK(s, tx)]?tk, te, tq, tv, tn
        :: empty(rep[LINK(s, tx)]) -> break
        od;
        tx++
    :: else -> break
    od;
    tx = 0; tk = 0; te = 0; tq = 0; tv = 0; tn = 0
#endif
}

/* P3 for a leader s that adopted table sbtab[s] in epoch sep[s]: every grant committed in an
 * older epoch is in it unless some leader proposed its release, and no handle whose release
 * was committed in an older epoch is.  (A leader may still adopt after a newer epoch
 * committed: it holds stale promises, but can never get an entry accepted.) */
inline check_adopted(w) {
    tx = 0;
    do
    :: tx < NH ->
        assert(!(ghep[tx] != 0 && ghep[tx] < sep[w] && ((grel | gtko) & BIT(tx)) == 0) ||
               (sbtab[w] & BIT(tx)));
        assert(!(grcep[tx] != 0 && grcep[tx] < sep[w]) || (sbtab[w] & BIT(tx)) == 0);
        tx++
    :: else -> break
    od;
    tx = 0
}

/* Leader._adopt: the best version among the promises becomes the leader's table. */
inline adopt(s) {
    check_adopted(s);
    stab[s] = sbtab[s]; sseq[s] = 0; scom[s] = -1;
#ifdef BUG_ADOPT_AS_COMMITTED
    sadc[s] = 1;
#else
    sadc[s] = (sbest[s] > 0 && sbkc[s] >= sbest[s]);     /* a promise knew it committed */
#endif
    /* takeover.unanswered_grants: the marked grants above every known commit among the
     * promises were never answered (answered => two backends durably know): aborted */
    if
#if defined(BUG_ABORT_KNOWN)
    :: true ->                      /* also a table, and grants, known committed */
#elif defined(NO_TAKEOVER_ABORT)
    :: false ->
#else
    :: !sadc[s] ->
#endif
        tx = 0;
        do
        :: tx < NH ->
            if
#ifdef BUG_ABORT_KNOWN
            :: (stab[s] & smk[s] & BIT(tx)) ->
#else
            :: (stab[s] & smk[s] & BIT(tx)) && hgver[tx] > sbkc[s] ->
#endif
                stab[s] = stab[s] & ~BIT(tx); gtko = gtko | BIT(tx)
            :: else -> skip
            fi;
            tx++
        :: else -> break
        od;
        tx = 0
    :: else -> skip
    fi;
    role[s] = SYNCING
}

/* The durable knowledge two backends acknowledged covers these committed flagged seqs: their
 * grants are answered (productlog.answer_durable). */
inline answer_durable(s) {
    /* the median of three = the second-highest acknowledged known seq + 1 */
    ta = sknw[LINK(s, 0)]; tb = sknw[LINK(s, 1)]; tc = sknw[LINK(s, 2)];
    td = (ta < tb -> ta : tb);
    tf = (ta > tb -> ta : tb);
    tf = (tf < tc -> tf : tc);
    ta = (td > tf -> td : tf);
    td = 0; tf = 0;
    tx = 1;
    do
    :: tx <= MAXSEQ ->
        if
        :: (swt[s] & BIT(tx)) && tx < ta ->
            swt[s] = swt[s] & ~BIT(tx);
            ty = OP_HANDLE(slog[s * (MAXSEQ + 1) + tx]);
            answered(s, ty);
            ty = 0
        :: else -> skip
        fi;
        tx++
    :: else -> break
    od;
    tx = 0; ta = 0; tb = 0; tc = 0
}

/* The leader answers the grant of handle h (ghost bookkeeping for P4). */
inline answered(s, h) {
    if
    :: ghans[h] == 0 || sep[s] < ghans[h] -> ghans[h] = sep[s]
    :: else -> skip
    fi
}

/* Leader._recommit: committed = the second-highest acknowledged seq. */
inline recommit(s) {
    ta = (sack[LINK(s, 0)] == NONE -> -1 : sack[LINK(s, 0)]);
    tb = (sack[LINK(s, 1)] == NONE -> -1 : sack[LINK(s, 1)]);
    tc = (sack[LINK(s, 2)] == NONE -> -1 : sack[LINK(s, 2)]);
#ifdef BUG_COMMIT_ONE_ACK
    ta = (ta > tb -> ta : tb); ta = (ta > tc -> ta : tc);   /* the highest */
#else
    /* the median of three = the second-highest: max(min(a, b), min(max(a, b), c)) */
    td = (ta < tb -> ta : tb);
    tf = (ta > tb -> ta : tb);
    tf = (tf < tc -> tf : tc);
    ta = (td > tf -> td : tf);
    td = 0; tf = 0;
#endif
    if
    :: ta > scom[s] ->
        /* one entry in flight at a time (an abort's snapshot follows the aborted seq) */
        assert(ta == sseq[s] && (ta == scom[s] + 1 || ta == scom[s] + 2 && svoid[s] == ta - 1));
        /* P1: the committed table never holds more seats than the effective LQ */
        assert(SEATS(stab[s]) <= EFF_LQ);
        /* P2: no two leader terms commit in one epoch */
        assert(gcommit[sep[s]] == 0 || gcommit[sep[s]] == s * 16 + sterm[s] + 1);
        gcommit[sep[s]] = s * 16 + sterm[s] + 1;
        tx = 0;
        do
        :: tx < NH ->
            if
            :: (stab[s] & BIT(tx)) && (ghep[tx] == 0 || sep[s] < ghep[tx]) -> ghep[tx] = sep[s]
            :: else -> skip
            fi;
            tx++
        :: else -> break
        od;
        if
        :: ta >= 1 && IS_RELEASE(slog[s * (MAXSEQ + 1) + ta]) ->
            tx = OP_HANDLE(slog[s * (MAXSEQ + 1) + ta]);
            if
            :: grcep[tx] == 0 || sep[s] < grcep[tx] -> grcep[tx] = sep[s]
            :: else -> skip
            fi
#ifdef BUG_ANSWER_AT_COMMIT
#define WAITS(s, q) false           /* answers every grant at its commit */
#else
#define WAITS(s, q) (snot[s] & BIT(q))
#endif
        :: ta >= 1 && IS_GRANT(slog[s * (MAXSEQ + 1) + ta]) && WAITS(s, ta) ->
            swt[s] = swt[s] | BIT(ta)   /* told once two backends durably know the commit */
        :: ta >= 1 && IS_GRANT(slog[s * (MAXSEQ + 1) + ta]) && !WAITS(s, ta) ->
            ty = OP_HANDLE(slog[s * (MAXSEQ + 1) + ta]);
            answered(s, ty);            /* its client is told */
            ty = 0
        :: else -> skip
        fi;
        /* P4: the committed table holds every grant answered in this or an older epoch
         * unless some leader proposed its release */
        tx = 0;
        do
        :: tx < NH ->
            assert(ghans[tx] == 0 || ghans[tx] > sep[s] || (grel & BIT(tx)) || (stab[s] & BIT(tx)));
            tx++
        :: else -> break
        od;
        tx = 0;
        scom[s] = ta; sref[s] = 0;
        /* P3 also for a newer leader that adopted before this commit became known here */
        if
        :: ROLE_LEADS(1 - s) && role[1 - s] != PREPARING && sep[1 - s] > sep[s] ->
            tw = 1 - s;
            check_adopted(tw);
            tw = 0
        :: else -> skip
        fi
    :: else -> skip
    fi;
    ta = 0; tb = 0; tc = 0
}

/* Leader.on_reply for the reply (k, e, q, v, n) of backend b. */
inline on_reply(s, b, k, e, q, v, n) {
    if
    :: k == REJECTED ->
        if
        :: ROLE_LEADS(s) && e > sep[s] -> fence(s)
        :: else -> skip
        fi
    :: k == PROMISE && e == sep[s] && (role[s] == PREPARING || role[s] == SYNCING) ->
        spr[s] = spr[s] | BIT(b);   /* a late promise: it joins through a snapshot */
        if
        :: role[s] == PREPARING ->
            if
            :: q > sbest[s] -> sbest[s] = q; sbtab[s] = v & 15
            :: else -> skip
            fi;
            smk[s] = smk[s] | (v >> 4);
            sbkc[s] = (n > sbkc[s] -> n : sbkc[s]);
            if
            :: SEATS(spr[s]) >= 2 -> adopt(s)
            :: else -> skip
            fi
        :: else -> skip
        fi
    :: k == ACCEPTED && e == sep[s] && (role[s] == SYNCING || role[s] == ACTIVE) ->
        sinf[LINK(s, b)] = 0;
        sknw[LINK(s, b)] = (n > sknw[LINK(s, b)] -> n : sknw[LINK(s, b)]);
        if
        :: v == NOTICED -> skip
        :: v == OK ->
            q = (q > 0 && q == svoid[s] -> q - 1 : q);     /* the aborted seq does not count */
            sack[LINK(s, b)] = (sack[LINK(s, b)] == NONE || q > sack[LINK(s, b)]
                                -> q : sack[LINK(s, b)])
        :: v != OK && v != NOTICED ->
            sack[LINK(s, b)] = NONE;
#ifndef NO_ABORT
            if
            :: v == REFUSED && role[s] == ACTIVE && sseq[s] > scom[s] -> sref[s] = sref[s] | BIT(b)
            :: else -> skip
            fi
#endif
        fi;
        if
        :: role[s] == SYNCING && (ssnap[s] & BIT(b)) == 0 ->
            ssnap[s] = ssnap[s] | BIT(b);
            if
            :: SEATS(ssnap[s]) >= 2 -> role[s] = ACTIVE
            :: else -> skip
            fi
        :: else -> skip
        fi;
        recommit(s);
        answer_durable(s)
    :: else -> skip                 /* an answer to an older term: ignored */
    fi
}

/* Leader._pump_backend: a snapshot when the backend's place is unknown, else the next entry. */
#define CAN_PUMP(s, b) \
    ((role[s] == SYNCING && (spr[s] & BIT(b)) || role[s] == ACTIVE) && \
     !sinf[LINK(s, b)] && (sack[LINK(s, b)] == NONE || sack[LINK(s, b)] < sseq[s]) && \
     nfull(req[LINK(s, b)]))

/* The table as of the committed seq (one entry at most is uncommitted: undo it; an abort's
 * table is the committed one). */
#define UNAPPLY(t, op) (IS_GRANT(op) -> ((t) & ~BIT(OP_HANDLE(op))) : ((t) | BIT(OP_HANDLE(op))))
#define COMMITTED_TABLE(s) \
    (sseq[s] == scom[s] || slog[s * (MAXSEQ + 1) + sseq[s]] == ABORT_OP -> stab[s] : \
     UNAPPLY(stab[s], slog[s * (MAXSEQ + 1) + sseq[s]]))
#define KNOWN(s) (scom[s] >= 0 -> VER(sep[s], scom[s]) : 0)

inline pump(s, b) {
    /* the next seq it lacks; an aborted seq is skipped (its abort snapshot follows it) */
    ty = sack[LINK(s, b)] + 1;
    ty = (ty == svoid[s] -> ty + 1 : ty);
    if
    :: sack[LINK(s, b)] == NONE && scom[s] >= 0 ->     /* committed state, flagged */
        req[LINK(s, b)]!SNAPSHOT, sep[s], scom[s], COMMITTED_TABLE(s) | CFLAG, 0
    :: sack[LINK(s, b)] == NONE && scom[s] < 0 ->      /* entry 0 of the takeover */
        req[LINK(s, b)]!SNAPSHOT, sep[s], 0, stab[s] | (sadc[s] -> CFLAG : 0), 0
    :: sack[LINK(s, b)] != NONE && slog[s * (MAXSEQ + 1) + ty] == ABORT_OP && scom[s] >= ty ->
        req[LINK(s, b)]!SNAPSHOT, sep[s], scom[s], COMMITTED_TABLE(s) | CFLAG, 0
    :: sack[LINK(s, b)] != NONE && slog[s * (MAXSEQ + 1) + ty] == ABORT_OP && scom[s] < ty ->
        req[LINK(s, b)]!SNAPSHOT, sep[s], ty, stab[s], 0    /* an abort: a proposal */
    :: sack[LINK(s, b)] != NONE && slog[s * (MAXSEQ + 1) + ty] != ABORT_OP ->
        tw = slog[s * (MAXSEQ + 1) + ty] | ((snot[s] & BIT(ty)) -> NFLAG : 0);
        req[LINK(s, b)]!ACCEPT, sep[s], ty, tw, KNOWN(s);
        tw = 0;
        stold[LINK(s, b)] = scom[s] + 1
    fi;
    ty = 0;
    sinf[LINK(s, b)] = 1
}

/* One server's handling of one backend (a process per link, for fairness). */
proctype ServerLink(byte s; byte b) {
end:
    do
    :: atomic {                     /* a reply */
        nempty(rep[LINK(s, b)]) ->
        take_any(rep[LINK(s, b)], k, e, q, v, n);
        on_reply(s, b, k, e, q, v, n);
        k = 0; e = 0; q = 0; v = 0; n = 0
    }
    :: atomic { CAN_PUMP(s, b) -> pump(s, b) }
#ifndef NO_NOTICE
    :: atomic {                     /* a commit notice (Leader._notify_commits) */
        role[s] == ACTIVE && scom[s] >= 0 && stold[LINK(s, b)] < scom[s] + 1 &&
        !sinf[LINK(s, b)] && nfull(req[LINK(s, b)]) &&
        /* only while the table holds more seats than some backend's copy allows, or
         * grants wait for it */
        (SEATS(stab[s]) > LQ(0) || SEATS(stab[s]) > LQ(1) || SEATS(stab[s]) > LQ(2) ||
         swt[s] != 0) ->
        req[LINK(s, b)]!ACCEPT, sep[s], 0, 0, KNOWN(s);
        stold[LINK(s, b)] = scom[s] + 1;
        sinf[LINK(s, b)] = 1
    }
#endif
    :: atomic {                     /* Leader._timeout of an ACCEPT/SNAPSHOT */
        sinf[LINK(s, b)] && LOST(LINK(s, b)) ->
        sinf[LINK(s, b)] = 0;
        stold[LINK(s, b)] = 0;      /* the commits it may not have been told: again */
        if
        :: sack[LINK(s, b)] = NONE  /* _mark_down: it gets a snapshot */
        :: skip                     /* it answered later requests: resend from acked */
        fi
    }
    :: atomic {                     /* timeout of a PREPARE: sent again */
        role[s] == PREPARING && (spr[s] & BIT(b)) == 0 && LOST(LINK(s, b)) &&
        nfull(req[LINK(s, b)]) ->
        req[LINK(s, b)]!PREPARE, sep[s], 0, 0, 0
    }
    od
}

/* A client checkout (grant) or release served by an ACTIVE leader: a new log entry. */
#ifdef ABORT_SCENARIO
#define PROPOSER(s) (s == 0)
#else
#define PROPOSER(s) true
#endif
#define CAN_PROPOSE(s) (role[s] == ACTIVE && sseq[s] == scom[s] && sseq[s] < MAXSEQ && PROPOSER(s))

inline propose(s, op) {
    sseq[s]++;
    slog[s * (MAXSEQ + 1) + sseq[s]] = op;
    stab[s] = APPLY(stab[s], op);
    if
    :: IS_GRANT(op) ->
        hgver[OP_HANDLE(op)] = VER(sep[s], sseq[s]);
        if  /* productlog.update_under_way: flagged notice */
        :: SEATS(stab[s]) > LQ(0) || SEATS(stab[s]) > LQ(1) || SEATS(stab[s]) > LQ(2) ->
            snot[s] = snot[s] | BIT(sseq[s])
        :: else -> skip
        fi
    :: else -> skip
    fi
}

/* Abort the uncommitted grant a backend refused (Leader._abort_refused): the table without
 * it goes out as a snapshot at the next seq; the grant is never answered, and its seq's
 * acknowledgements no longer count. */
#ifdef BUG_ABORT_ANSWERED
#define CAN_ABORT(s) (role[s] == ACTIVE && sseq[s] < MAXSEQ && sseq[s] >= 1 && \
    IS_GRANT(slog[s * (MAXSEQ + 1) + sseq[s]]) && \
    (sseq[s] == scom[s] + 1 && sref[s] != 0 || sseq[s] == scom[s]))
#else
#define CAN_ABORT(s) (role[s] == ACTIVE && sseq[s] < MAXSEQ && sref[s] != 0 && \
    sseq[s] == scom[s] + 1 && IS_GRANT(slog[s * (MAXSEQ + 1) + sseq[s]]))
#endif

inline abort_grant(s) {
    tx = OP_HANDLE(slog[s * (MAXSEQ + 1) + sseq[s]]);
#ifdef BUG_ANSWER_ABORTED
    answered(s, tx);
#endif
    stab[s] = stab[s] & ~BIT(tx);
    gabort++;
    svoid[s] = sseq[s];
    sseq[s]++;
    slog[s * (MAXSEQ + 1) + sseq[s]] = ABORT_OP;
    sref[s] = 0;
    tx = 0;
    do                              /* acknowledgements of the aborted seq no longer count */
    :: tx < NB ->
        if
        :: sack[LINK(s, tx)] == svoid[s] -> sack[LINK(s, tx)] = svoid[s] - 1
        :: else -> skip
        fi;
        tx++
    :: else -> break
    od;
    tx = 0
}

#if defined(ABORT_SCENARIO) && defined(LIVENESS)
#define NO_RELEASES true        /* the abort's liveness scenario: one grant, nothing after it */
#else
#define NO_RELEASES false
#endif

inline client_ops(s, h) {
    if
    :: atomic {
        CAN_PROPOSE(s) && (hused & BIT(h)) == 0 &&
#if defined(BUG_NO_LQ_CHECK) || defined(OVER_ADMIT)
        SEATS(stab[s]) + 1 <= LQ_NEW ->
#else
        SEATS(stab[s]) + 1 <= EFF_LQ ->         /* Leader._admission */
#endif
        hused = hused | BIT(h);
        propose(s, GRANT_OP(h))
    }
    :: atomic {
        CAN_PROPOSE(s) && (stab[s] & BIT(h)) && !NO_RELEASES ->
        grel = grel | BIT(h);
        propose(s, RELEASE_OP(h))
    }
    fi
}

#ifdef LIVENESS
/* keepalived promotes a server when nobody leads in the newest epoch; STEALS more times
 * it promotes one while another leads (split brain, an operator's --force). */
#ifdef ABORT_SCENARIO
#ifdef TAKEOVER_WINDOW
/* server 0 leads; once it crashed, server 1 takes over */
#define ONE_LEADER(s) (s == 0 && sterm[0] == 0 || s == 1 && sterm[0] > 0 && role[0] == STANDBY)
#else
#define ONE_LEADER(s) (s == 0)  /* the abort scenario: server 0 alone leads */
#endif
#else
#define ONE_LEADER(s) true
#endif
#define MAY_PROMOTE(s) (slc[s] < MAXC && CTR(bprom[0]) < MAXC && CTR(bprom[1]) < MAXC && \
                        CTR(bprom[2]) < MAXC && (!CURRENT_LEADER || gsteal > 0) && ONE_LEADER(s))
#define SPEND_PROMOTE if :: CURRENT_LEADER -> gsteal-- :: else -> skip fi
#else
#ifdef TAKEOVER_SCENARIO
/* A narrower environment for the seeded takeover bugs: server 0 leads first, then server 1
 * takes over; only backend 0 is updated (it alone holds the LQ_NEW copy). */
#define MAY_PROMOTE(s) (slc[s] < MAXC && (s == 0 || sterm[0] > 0))
#elif defined(TAKEOVER_WINDOW)
/* The takeover window: server 0 leads first; once it crashed, server 1 takes over. */
#define MAY_PROMOTE(s) (slc[s] < MAXC && (s == 0 || sterm[0] > 0 && role[0] == STANDBY))
#elif defined(ABORT_SCENARIO)
/* The abort scenario (safety): server 0 leads first; once it aborted a grant and crashed,
 * server 1 takes over (it adopts and commits its snapshot, and proposes nothing). */
#define MAY_PROMOTE(s) (slc[s] < MAXC && (s == 0 || gabort > 0 && role[0] == STANDBY))
#else
#define MAY_PROMOTE(s) (slc[s] < MAXC)
#endif
#define SPEND_PROMOTE skip
#endif
#define MAY_CRASH (gscrash > 0)
#define SPEND_CRASH gscrash--

proctype Server(byte s) {
end:
    do
    :: atomic {
        (role[s] == STANDBY || role[s] == FENCED) && MAY_PROMOTE(s) ->
        SPEND_PROMOTE;
        promote(s)
    }
    :: atomic { role[s] != STANDBY && MAY_CRASH -> SPEND_CRASH; crash(s) }
#ifndef NO_ABORT
    :: atomic { CAN_ABORT(s) -> abort_grant(s) }
#endif
    :: client_ops(s, 0)
#if NH > 1
    :: client_ops(s, 1)
#endif
#if NH > 2
    :: client_ops(s, 2)
#endif
#if NH > 3
    :: client_ops(s, 3)
#endif
    od
}

/* ================================================================ environment */

#define MAY_FORGET (gforget > 0)
#define SPEND_FORGET gforget--
#define MAY_LOSE (gloss > 0)
#define SPEND_LOSS gloss--

inline lose(ch) {
    atomic {
        MAY_LOSE && nempty(ch) -> SPEND_LOSS;
        ch?tk, te, tq, tv, tn; tk = 0; te = 0; tq = 0; tv = 0; tn = 0
    }
}

inline forget(b) {              /* a backend restarts: its commit knowledge is gone */
    atomic { MAY_FORGET && bkc[b] != 0 -> SPEND_FORGET; bkc[b] = 0 }
}

#if defined(TAKEOVER_WINDOW)
/* once server 0 crashed (whatever it committed or told) */
#define MAY_STOP (gstop > 0 && sterm[0] > 0 && role[0] == STANDBY)
#elif defined(ABORT_SCENARIO)
/* while server 0's first entry (the grant) is in flight */
#define MAY_STOP (gstop > 0 && sseq[0] == 1 && scom[0] == 0)
#else
#define MAY_STOP (gstop > 0)
#endif
inline stop(b) {                /* a backend stops for good */
    atomic { MAY_STOP && (bstop & BIT(b)) == 0 -> gstop--; bstop = bstop | BIT(b) }
}

inline license_update(b) {      /* license_rollout: #2 with LQ_NEW reaches backend b */
    atomic { !bnew[b] -> bnew[b] = 1 }
}

proctype Env() {
end:
    do
#ifndef ABORT_SCENARIO
    :: license_update(0)
#ifndef TAKEOVER_SCENARIO
    :: license_update(1)
    :: license_update(2)
#endif
#endif
    :: forget(0)
    :: forget(1)
    :: forget(2)
#if STOPS > 0
    :: stop(1)
#ifndef ABORT_SCENARIO
    :: stop(0)
    :: stop(2)
#endif
#endif
    :: lose(req[0])
    :: lose(req[1])
    :: lose(req[2])
    :: lose(req[3])
    :: lose(req[4])
    :: lose(req[5])
    :: lose(rep[0])
    :: lose(rep[1])
    :: lose(rep[2])
    :: lose(rep[3])
    :: lose(rep[4])
    :: lose(rep[5])
    od
}

init {
    atomic {
        sack[0] = NONE; sack[1] = NONE; sack[2] = NONE;
        sack[3] = NONE; sack[4] = NONE; sack[5] = NONE;
        scom[0] = -1; scom[1] = -1;
#ifdef ABORT_SCENARIO
        /* an update under way: backends 0 and 1 hold #2 (LQ_NEW), backend 2 still #1 */
        bnew[0] = 1; bnew[1] = 1;
#endif
        run Env();
#if defined(ABORT_SCENARIO) && defined(LIVENESS) && !defined(TAKEOVER_WINDOW)
        /* server 0 alone leads */
        run Server(0);
        run ServerLink(0, 0); run ServerLink(0, 1); run ServerLink(0, 2);
        run BackendLink(0, 0); run BackendLink(0, 1); run BackendLink(0, 2)
#else
        run Server(0); run Server(1);
        run ServerLink(0, 0); run ServerLink(0, 1); run ServerLink(0, 2);
        run ServerLink(1, 0); run ServerLink(1, 1); run ServerLink(1, 2);
        run BackendLink(0, 0); run BackendLink(0, 1); run BackendLink(0, 2);
        run BackendLink(1, 0); run BackendLink(1, 1); run BackendLink(1, 2)
#endif
    }
}

#ifdef LIVENESS
ltl live { <> [] (DONE(0) || DONE(1)) }
#endif
