"""The reference world's settings: `[world]` (how its world model is trained) and `[planner]` (how its
System 2 plans) in the home's dmn.toml, checked like every section (`dmn.config.Section`).

    >>> ReferenceSettings.load(Home.resolve()).planner.samples  # doctest: +SKIP
    128
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dmn.config import Section, bounded, read_toml, section
from dmn.home import Home


@dataclass
class WorldSettings(Section):
    latent_dim: int = bounded(128, ge=1)
    """Dimension of the reference world model's latent state z."""
    hidden: int = bounded(128, ge=1)
    """Width of the hidden layers of its networks."""
    explore_steps: int = bounded(8000, ge=1)
    """Transitions of random exploration collected before the first training."""
    sticky: float = bounded(4.0, ge=1)
    """Mean run of a repeated random exploration action, so exploration wanders farther than coin flips."""
    restarts: float = bounded(0.5, ge=0, le=1)
    """Share of the first exploration's episodes that restart from a rarely seen state (Go-Explore).

    The random play of each round always restarts from rare states, the planner's included."""
    rollout: int = bounded(5, ge=1)
    """Steps the predictor is unrolled in training, each compared with the target encoder's latent."""
    updates: int = bounded(1500, ge=1)
    """Gradient steps of the first training."""
    batch: int = bounded(256, ge=2)
    """Training windows per gradient step."""
    lr: float = bounded(1e-3, gt=0)
    """Adam learning rate."""
    ema: float = bounded(0.99, gt=0, le=1)
    """Momentum of the target encoder (an exponential moving average of the encoder)."""
    gamma: float = bounded(0.9, gt=0, lt=1)
    """Discount of the value head's return-to-go."""
    variance_weight: float = bounded(1.0, ge=0)
    """VICReg variance term: keeps every latent dimension spread out, so the latents cannot collapse."""
    covariance_weight: float = bounded(0.04, ge=0)
    """VICReg covariance term: decorrelates the latent dimensions (0 switches it off)."""
    rounds: int = bounded(1, ge=0)
    """Rounds of data aggregation after the first training: the planner collects, then training goes on."""
    round_steps: int = bounded(2000, ge=1)
    """Transitions the planner collects per round."""
    round_updates: int = bounded(500, ge=1)
    """Gradient steps after each round."""
    seed: int = bounded(1, ge=0)
    """Seed of the world model's training (the model is cached per environment and settings)."""


@dataclass
class PlannerSettings(Section):
    horizon: int = bounded(15, ge=1)
    """Steps System 2 imagines ahead."""
    samples: int = bounded(128, ge=1)
    """Discrete actions: action sequences imagined per iteration, split evenly over the first actions."""
    iterations: int = bounded(1, ge=1)
    """Discrete actions: cross-entropy-method iterations; each after the first refits the sampling
    distribution to the elites."""
    elites: int = bounded(32, ge=1)
    """Discrete actions: best sequences of an iteration: the next iteration samples around them, and a
    candidate first action scores the mean of its share of them (a mean of many is a smooth function of the state)."""
    continuous_samples: int = bounded(256, ge=2)
    """Continuous actions: action sequences imagined per iteration, drawn from a Gaussian per step."""
    continuous_iterations: int = bounded(6, ge=1)
    """Continuous actions: at most this many iterations, each refitting the Gaussians to the elites."""
    continuous_elites: int = bounded(32, ge=1)
    """Continuous actions: best sequences of an iteration, which the Gaussians are refitted to; the last
    iteration's are the candidates System 2 logs, and its action is their mean first action."""
    converged: float = bounded(0.05, gt=0, lt=1)
    """Continuous actions: the search stops early once the first action's standard deviation, in units of
    its range, is at most this in every dimension (a cold search starts at 0.5)."""
    seeded_share: float = bounded(0.5, ge=0, le=1)
    """Continuous actions: share of the first iteration's samples drawn around System 1's proposal when
    there is one (the rest as cold, so that a wrong proposal loses to a better action)."""
    value_weight: float = bounded(0.3, ge=0)
    """Weight of the values of the imagined states in a sequence's score (the rest is imagined reward)."""
    veto: float = bounded(0.5, gt=0, le=1)
    """A first action is vetoed when its best imagined future fails (ends an episode early) with this probability."""
    seed: int = bounded(0, ge=0)
    """Seed of System 2's random numbers, drawn afresh for every search: the same state gets the same answer."""

    def check(self) -> None:
        if self.elites > self.samples:
            raise ValueError(f"elites must be at most samples ({self.samples}), got {self.elites}")
        if self.continuous_elites > self.continuous_samples:
            raise ValueError(f"continuous_elites must be at most continuous_samples ({self.continuous_samples}), "
                             f"got {self.continuous_elites}")


@dataclass
class ReferenceSettings:
    """Everything the reference world reads from dmn.toml."""

    world: WorldSettings = field(default_factory=WorldSettings)
    """How its world model is trained (a change trains a new one, with a new encoder version)."""
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    """How its System 2 plans."""

    @classmethod
    def load(cls, home: Home) -> ReferenceSettings:
        """The `[world]` and `[planner]` sections of the home's dmn.toml (the rest is `Home.settings()`)."""
        path = home.root / "dmn.toml"
        data = read_toml(path)
        return cls(section(WorldSettings, data.get("world", {}), path, "world"),
                   section(PlannerSettings, data.get("planner", {}), path, "planner"))
