"""The agent's side in one call: `Decider` asks System 1, runs the planner where it abstains, and logs as the night expects."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from dmn import ANY_ENCODER, Candidate, Decider, EpisodeLogger, Plan, Reflexes
from dmn.home import Home
from dmn.lake.ingest import ingest
from dmn.lake.store import Store
from dmn.worlds.synthetic import Truth


class Planner:
    """A planner that knows the world: it imagines each action, scores the true best highest, vetoes the bad one."""

    def __init__(self, truth: Truth):
        self.truth, self.proposals, self.lock = truth, [], threading.Lock()

    def __call__(self, z, proposal):
        s = int(np.argmin(((self.truth.centres - z) ** 2).sum(1)))
        with self.lock:
            self.proposals.append(proposal)
        candidates = [Candidate(a, float(a == self.truth.best[s]), predicted=z + a, vetoed=a == self.truth.vetoed[s])
                      for a in range(3)]
        return Plan(int(self.truth.best[s]), candidates)


def logged(home: Home) -> dict[tuple[str, int], tuple]:
    """Per (episode, step): the decision's source, action, withheld reflex, latency, and its simulations."""
    ingest(home)
    rows = Store(home).sql("""
        SELECT d.episode_id, d.step, d.source, d.action, d.reflex, d.latency_ms,
               (SELECT count(*) FROM simulations s WHERE s.episode_id = d.episode_id AND s.step = d.step)
        FROM decisions d""").fetchall()
    return {(e, s): rest for e, s, *rest in rows}


def check(home: Home, decisions: list[tuple[str, int, object]]) -> None:
    """Every decision is in the lake as the night expects it: System 2 steps with their three simulations and,
    on an audit, the answer System 1 withheld; System 1 steps with none."""
    lake = logged(home)
    assert len(lake) == len(decisions)
    for episode_id, step, d in decisions:
        source, action, reflex, latency, simulations = lake[episode_id, step]
        assert (source, action) == (d.source, str(d.action)) and latency == pytest.approx(d.latency_ms, rel=1e-6)
        assert latency > 0 and type(d.action) is int  # integer actions come back as integers, from both systems
        assert simulations == (3 if d.source == "system2" else 0)
        assert reflex == (None if d.withheld is None else str(d.withheld.action))


def test_without_a_bundle_the_planner_decides_every_step(tmp_path, world):
    _, truth = world
    home, planner = Home.resolve(tmp_path / "home"), Planner(truth)
    with Decider.open("synthetic", encoder="synthetic@1", home=home) as decider:
        episode = decider.episode()
        decisions = [(episode, i, decider.decide(i, z, planner)) for i, z in enumerate(truth.sample(12)[0])]
    assert {d.source for *_, d in decisions} == {"system2"} and planner.proposals == [None] * 12
    check(home, decisions)


def test_system1_serves_and_audits_log_what_it_withheld(tmp_path, world):
    served_from, truth = world
    home, planner = Home.resolve(tmp_path / "home"), Planner(truth)
    reflexes = Reflexes.open("synthetic", encoder="synthetic@1", home=served_from, audit_rate=0.3, seed=1)
    with Decider(reflexes, EpisodeLogger(home, world="synthetic", encoder="synthetic@1")) as decider:
        episode = decider.episode()
        decisions = [(episode, i, decider.decide(i, z, planner)) for i, z in enumerate(truth.sample(200)[0])]
    by = {s: [d for *_, d in decisions if d.source == s] for s in ("system1", "system2")}
    audits = [d for d in by["system2"] if d.withheld is not None]
    assert len(by["system1"]) >= 100 and 30 <= len(audits) <= 90
    assert all(d.reflex is not None and d.confidence == d.reflex.confidence for d in by["system1"])
    assert all(d.plan is not None for d in by["system2"]) and all(d.plan is None for d in by["system1"])
    # the planner hears System 1's proposal where it abstained on its own, never on an audit (a cold check)
    assert planner.proposals.count(None) >= len(audits) and len(planner.proposals) == len(by["system2"])
    check(home, decisions)


def test_threads_and_asyncio_tasks_share_one_decider_and_log_each_audit_right(tmp_path, world):
    served_from, truth = world
    home, planner = Home.resolve(tmp_path / "home"), Planner(truth)
    reflexes = Reflexes.open("synthetic", encoder="synthetic@1", home=served_from, audit_rate=0.25, seed=2)
    decisions: list = []
    with Decider(reflexes, EpisodeLogger(home, world="synthetic", encoder="synthetic@1")) as decider:

        def live(n: int) -> None:
            episode = decider.episode(f"thread-{n}")
            for i, z in enumerate(truth.sample(60, seed=n)[0]):
                decisions.append((episode, i, decider.decide(i, z, planner, episode_id=episode)))

        threads = [threading.Thread(target=live, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def remote(z, proposal):  # a planner served elsewhere: other tasks ask and log while it thinks
            await asyncio.sleep(0)
            return planner(z, proposal)

        async def task(n: int) -> None:
            episode = decider.episode(f"task-{n}")
            for i, z in enumerate(truth.sample(40, seed=100 + n)[0]):
                decisions.append((episode, i, await decider.adecide(i, z, remote, episode_id=episode)))

        async def main() -> None:
            await asyncio.gather(*(task(n) for n in range(4)))

        asyncio.run(main())
    assert len(decisions) == 6 * 60 + 4 * 40 and sum(d.withheld is not None for *_, d in decisions) >= 50
    check(home, decisions)


def test_a_vectorised_batch_of_environments_decides_in_one_call(tmp_path, world):
    served_from, truth = world
    home, planner = Home.resolve(tmp_path / "home"), Planner(truth)
    reflexes = Reflexes.open("synthetic", encoder="synthetic@1", home=served_from, audit_rate=0.2, seed=3)
    decisions = []
    with Decider(reflexes, EpisodeLogger(home, world="synthetic", encoder="synthetic@1")) as decider:
        episodes = [decider.episode(f"env-{n}") for n in range(8)]
        for step in range(15):
            states = truth.sample(8, seed=step)[0]
            batch = decider.decide_batch([step] * 8, states, planner, episode_ids=episodes)
            assert len(batch) == 8
            decisions += [(e, step, d) for e, d in zip(episodes, batch)]
        with pytest.raises(ValueError, match="one entry per environment"):
            decider.decide_batch([0, 1], states, planner, episode_ids=episodes)
    sources = [d.source for *_, d in decisions]
    assert sources.count("system1") >= 60 and sum(d.withheld is not None for *_, d in decisions) >= 10
    check(home, decisions)


def test_a_bare_action_from_the_planner_is_a_decision_without_simulations(tmp_path, world):
    _, truth = world
    home = Home.resolve(tmp_path / "home")
    with pytest.raises(ValueError, match="judge another world"):
        Decider(Reflexes.open("synthetic", encoder="synthetic@1", home=home), EpisodeLogger(home, world="w", encoder="e"))
    with pytest.raises(ValueError, match="name it"):
        Decider.open("synthetic", encoder=ANY_ENCODER, home=home)
    with Decider.open("synthetic", encoder="synthetic@1", home=home) as decider:
        decider.episode("e")
        assert decider.decide(0, truth.centres[0], lambda z, proposal: 2).action == 2
        with pytest.raises(ValueError, match="all carry `predicted`, or none"):
            decider.decide(1, truth.centres[0], lambda z, p: Plan(0, [Candidate(0, 1.0, predicted=z), Candidate(1, 0.0)]))
        with pytest.raises(ValueError):  # candidates of ragged shapes: nothing of the step is logged
            decider.decide(2, truth.centres[0], lambda z, p: Plan(0, [Candidate([0, 1], 1.0), Candidate([1], 0.0)]))
    lake = logged(home)
    assert list(lake) == [("e", 0)] and lake["e", 0][:3] == ["system2", "2", None] and lake["e", 0][4] == 0
