"""`on_demand` KV allocation for continuous batching: vLLM's token-by-token KV with preemption by recomputation.

See sim/server/kvcache.py for the capacity and the two allocation modes.
"""

from __future__ import annotations

from dataclasses import replace

from edgevlm.sim.server.batching import ContinuousReplica


class OnDemandReplica(ContinuousReplica):
    """Continuous batching with KV allocated as tokens appear (in blocks of `kv_block_tokens`) and
    preemption by recomputation."""

    def loop(self):
        srv = self.server
        env, waiting, cfg = srv.env, self.waiting, srv.cfg
        iteration_s = srv.latency.iteration_s
        max_batch = cfg.max_batch
        token_budget = cfg.max_batched_tokens or float("inf")
        kv = self.kv
        bt = self.block_tokens
        cap = self.capacity_blocks  # whole blocks of `bt` tokens
        watermark = self.watermark_blocks  # blocks an admission leaves free (vLLM's watermark)
        ctx = 0  # KV tokens held by running sequences (the latency model's context)
        used = 0  # KV blocks they hold: a sequence of n tokens holds ceil(n / bt)
        running: dict[int, list] = {}  # admission number -> [job, done, start_s, held, steps_left, generated]
        seq = 0
        while True:
            if not waiting and not running:
                self._wake = env.event()
                yield self._wake
            # The running sequences each add one token this iteration, those with full blocks a block;
            # preempt the newest until they fit.
            grow = len(running) if bt == 1 else sum(1 for r in running.values() if r[3] % bt == 0)
            while len(running) > 1 and used + grow > cap:
                k = next(reversed(running))
                job, done, start, held, _, gen = running.pop(k)
                ctx -= held
                used -= -(-held // bt)
                if bt == 1 or held % bt == 0:
                    grow -= 1
                kv.preempt(env.now)
                waiting.appendleft((job, done, env.now, (start, gen)))
                srv.waiting += 1
            n_dec = len(running)
            new = []
            tokens = 0
            blocks = 0  # of the admitted prompts
            while waiting and n_dec + len(new) < max_batch:
                entry = waiting[0]
                job = entry[0]
                gen = entry[3][1] if len(entry) > 3 else 0
                n = job.visual_tokens + job.prompt_tokens + gen
                b = -(-n // bt)
                if (n_dec or new) and (used + grow + blocks + b + watermark > cap
                                       or (new and tokens + n > token_budget)):
                    break
                new.append(waiting.popleft())
                tokens += n
                blocks += b
            start = env.now
            jobs = [e[0] if len(e) == 3 else replace(e[0], prompt_tokens=e[0].prompt_tokens + e[3][1], pre_flops=0.0,
                                                           cached_tokens=0)
                    for e in new]
            dur = iteration_s(jobs, n_dec, ctx)
            if srv.speed is not None:
                dur *= srv.speed(start)
            srv.busy_s += dur
            srv.batches += 1
            srv.batched_seqs += n_dec + len(new)
            if new:
                srv.waiting -= len(new)
                srv.wait_s += sum(start - e[2] for e in new)
            yield env.timeout(dur)
            end = env.now
            ctx += n_dec + tokens
            used += grow + blocks
            ended = []
            for k, rec in running.items():
                rec[3] += 1
                rec[5] += 1
                rec[4] -= 1
                if rec[4] == 0:
                    ended.append(k)
            for e, job in zip(new, jobs):
                kv.admitted += 1
                first, gen = (start, 0) if len(e) == 3 else e[3]
                if gen:
                    kv.recomputed_tokens += job.visual_tokens + job.prompt_tokens
                total = job.out_tokens - 1 if job.out_tokens > 1 else 0
                rec = [e[0], e[1], first, job.visual_tokens + job.prompt_tokens, total - gen, gen + 1]
                seq += 1
                if rec[4] <= 0:
                    ended.append(seq)
                running[seq] = rec
            kv.note(end, used * bt, n_dec + len(new))
            for k in ended:
                job, done, first, held, _, _ = running.pop(k)
                ctx -= held
                used -= -(-held // bt)
                done.succeed((first, end))
            self.n_running = len(running)
