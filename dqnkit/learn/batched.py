"""Many seeds in one process: N independent DQN agents whose arithmetic runs stacked (issue 28).

Each seed keeps what a plain run has: its agent's replay memory, random generator, ``t_step`` and counters,
so it draws the minibatches ``python main.py --seed S`` draws. What is shared is the arithmetic: the N local
and target networks are the rows of two ``(N, P)`` tensors, each layer one batched matrix product for all
seeds, and one Adam call moves the rows of the seeds that learn.

The learning step runs the agent's own named steps (``bellman_targets``, ``td_loss``) and through them the
pure functions (``bellman_target``, ``double_dqn_next_q``, ``row_max``, ``gamma ** n_step``). Those are
row-wise: they take the ``k * B`` rows of k seeds' minibatches as they are, from networks that map each
seed's rows with its own weights (:class:`StackedNetwork`: ``Network.forward`` with stacked layers); only
``td_loss``, a mean, is vmapped per seed. Why not ``vmap`` over ``functional_call`` for the networks too:
on one core its batching costs about 190 us per forward of these networks, the stacked layers 33 us.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import vmap
from torch.optim.adam import adam

from agent import Agent, Experiences, checked_loss
from dqnkit.learn import make_agent
from dqnkit.learn.options import OptionsAgent
from nnetwork import DuelingNetwork

Seeder = Callable[[int], np.random.Generator]
# The options whose learning step the stack does not reproduce, and how to tell an agent uses one.
REFUSED: dict[str, Callable[[OptionsAgent], bool]] = {
    "dueling": lambda a: isinstance(a.local_qnetwork, DuelingNetwork),
    "prioritized_replay": lambda a: a.memory.prioritized,
    "target_update_every (a hard target update)": lambda a: a.target_update_every != 0,
    "lr_decay_steps": lambda a: a.lr_decay_steps != 0,
    "gradient_steps": lambda a: a.gradient_steps != 1,
}


def refusals(agents: Sequence[Agent]) -> list[str]:
    """Why ``agents`` cannot be batched, in a few words each; empty when they can."""
    if not agents:
        return ["zero agents"]
    found = {f"{type(a).__name__} (not Agent or OptionsAgent)" for a in agents if type(a) not in (Agent, OptionsAgent)}
    found |= {name for a in agents if type(a) is OptionsAgent for name, used in REFUSED.items() if used(a)}
    names = ("learning_rate", "minibatch_size", "discount_factor", "interpolation_parameter", "device", "double_dqn")
    keys = {(type(a), *(getattr(a, n, None) for n in (*names, "loss", "grad_clip")), _shape(a)) for a in agents}
    return sorted(found) + (["unlike agents"] if len(keys) > 1 else [])


class StackedLinear(nn.Module):
    """``nn.Linear`` for k seeds at once: ``x`` ``(k, rows, in)``; ``weight`` stored transposed, ``(k, in, out)``,
    so that its gradient comes out contiguous (a transposed one costs a strided copy as large as the weights)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class StackedNetwork:
    """``Network.forward`` itself on k seeds' rows of a stacked ``(k, P)`` parameter tensor.

    A copy of the network whose ``nn.Linear`` layers are :class:`StackedLinear`; :meth:`bind` points them
    at :meth:`pieces` of the rows. Called like the network on ``(k * rows, state_size)``, seed j's rows j-th.
    """

    def __init__(self, network: nn.Module) -> None:
        if any(not isinstance(m, nn.Linear) for m in network.children()):
            raise ValueError(f"cannot batch {type(network).__name__}: only layers of nn.Linear stack")
        self.net, self.k, self.bound = copy.deepcopy(network), 0, None  # a weight's shape is transposed: (in, out)
        for name, _ in list(self.net.named_children()):
            setattr(self.net, name, StackedLinear())
        self.names = [name for name, _ in network.named_parameters()]  # "fc1.weight", ...: its state_dict's keys
        self.slots = [(self.net.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in self.names]
        self.shapes, self.sizes = zip(*((p.shape[::-1], p.numel()) for p in network.parameters()), strict=True)

    def to_row(self, params: Iterable[torch.Tensor]) -> torch.Tensor:
        """A network's parameters (or Adam moments) as one row of the stack's layout."""
        return torch.cat([p.detach().t().reshape(-1) for p in params])  # t(): a bias stays as it is

    def from_row(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One row of the stack as the network's parameters (views)."""
        return [piece.view(shape).t() for piece, shape in zip(row.split(self.sizes), self.shapes, strict=True)]

    def pieces(self, rows: torch.Tensor, leaves: bool = False) -> list[torch.Tensor]:
        """Views of ``rows`` (k, P) shaped as each layer's (transposed) weight or bias; with ``leaves``, each a
        leaf of autograd sharing the memory of ``rows``: made once for the stack, no view's backward each step."""
        views = [piece.unflatten(1, shape) for piece, shape in zip(rows.split(self.sizes, 1), self.shapes, strict=True)]
        return [view.detach().requires_grad_() for view in views] if leaves else views

    def bind(self, pieces: list[torch.Tensor]) -> StackedNetwork:
        """Compute with these :meth:`pieces` from now on."""
        if pieces is not self.bound:
            self.bound, self.k = pieces, pieces[0].shape[0]
            for (layer, attr), piece in zip(self.slots, pieces, strict=True):
                setattr(layer, attr, piece)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q = self.net(x.reshape(self.k, -1, x.shape[-1]))
        return q.reshape(*x.shape[:-1], q.shape[-1])


_ADAM_FLAGS = dict(weight_decay=0.0, amsgrad=False, maximize=False, fused=True)  # torch.optim.Adam(fused=True)'s


class StackedAdam:
    """Adam on the rows of ``(N, P)`` parameters, each row (seed) with its own step count.

    Why not ``torch.optim.Adam`` on the stack, though Adam is elementwise: it keeps one step count per
    parameter tensor, and its bias correction ``1 - beta ** step`` would then count the steps of the
    busiest seed for all of them; seeds learn at different times (an n-step memory fills later, a seed
    that solved stops). Here each row is a tensor of its own, with its own step count, for
    ``torch.optim.adam.adam``, the function the class calls: only the rows of the seeds that learn move
    their moments, counts and parameters, in the fused kernel of the plain agent's optimizer, hence its
    arithmetic (the same update written in tensor ops rounds differently and costs 2-4x more here).
    """

    def __init__(self, like: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(like), torch.zeros_like(like)
        self.steps = [torch.zeros((), device=like.device) for _ in range(like.shape[0])]  # float32, as torch's

    def step(self, params: torch.Tensor, grads: torch.Tensor, seeds: Sequence[int]) -> None:
        """One Adam update of the rows ``params[seeds]``, in place, from ``grads`` (one row per seed, in order)."""
        m, v, steps = ([x[i] for i in seeds] for x in (self.exp_avg, self.exp_avg_sq, self.steps))
        (beta1, beta2), params = self.betas, [params[i] for i in seeds]
        lr, eps = self.lr, self.eps
        adam(params, list(grads), m, v, [], steps, beta1=beta1, beta2=beta2, lr=lr, eps=eps, **_ADAM_FLAGS)


class BatchedAgents:
    """N DQN agents of one configuration learning as one: seed i is ``agents[i]``, its arithmetic stacked.

    Each agent's ``step`` keeps its rhythm (``t_step``, the memory's size, the minibatch drawn with its
    own rng); its ``learn`` is redirected to queue the minibatch here, and :meth:`learn` takes one step
    for every seed queued. The stacked networks are the truth: :meth:`agent_state` writes seed i's back.
    """

    def __init__(self, agents: Sequence[Agent]) -> None:
        if problems := refusals(agents):  # one stack and one named step for all: one class, sizes and arithmetic
            raise ValueError(f"BatchedAgents cannot batch {', '.join(problems)}")
        self.agents, self.n, first = list(agents), len(agents), agents[0]
        self.device, self.action_size, self.grad_clip = first.device, first.action_size, getattr(first, "grad_clip", 0)
        rows = torch.zeros(self.n, sum(p.numel() for p in first.local_qnetwork.parameters()), device=first.device)
        self.theta, self.target = rows, rows.clone()
        self.adam = StackedAdam(rows, first.learning_rate)
        self.local, self.target_net = StackedNetwork(first.local_qnetwork), StackedNetwork(first.target_qnetwork)
        self.every = (self.local.pieces(self.theta, leaves=True), self.target_net.pieces(self.target))  # all rows
        self.steps = copy.copy(first)  # whose named steps run on the stacked networks
        self.steps.local_qnetwork, self.steps.target_qnetwork = self.local, self.target_net
        self.queued: dict[int, Experiences] = {}
        for i, agent in enumerate(self.agents):
            agent.learn = functools.partial(self._queue, i)
            self._pull(i)

    @classmethod
    def from_seeds(cls, cfg: Any, seeds: Sequence[int], sizes: tuple[int, int], seed_everything: Seeder, device="cpu"):
        """Agent i as ``main.train`` builds it right after ``seed_everything(seeds[i])`` (``main.seed_everything``):
        its generator, and its initial weights drawn from the torch stream that seeded."""
        return cls([make_agent(cfg, *sizes, device, seed_everything(s)) for s in seeds])

    def act(self, states: np.ndarray, epsilons: Sequence[float], seeds: Sequence[int] | None = None) -> np.ndarray:
        """Epsilon-greedy actions of ``seeds`` (all by default) for their ``states`` (one row each).

        Each seed draws as ``Agent.act``: ``rng.random()``, then ``rng.integers`` only if it explores;
        the greedy seeds share one forward pass.
        """
        seeds, states = list(range(self.n) if seeds is None else seeds), np.asarray(states, dtype=np.float32)
        actions, greedy = np.zeros(len(seeds), dtype=np.int64), []
        for j, (i, epsilon) in enumerate(zip(seeds, epsilons, strict=True)):
            if self.agents[i].rng.random() >= epsilon:
                greedy.append(j)
            else:
                actions[j] = self.agents[i].rng.integers(self.action_size)
        if greedy:  # every seed's network on its state (zeros for seeds not acting): cheaper than picking rows
            x = np.zeros((self.n, states.shape[1]), dtype=np.float32)
            x[seeds] = states
            with torch.inference_mode():
                best = self.local.bind(self.every[0])(torch.from_numpy(x).to(self.device)).argmax(1).cpu().numpy()
            actions[greedy] = best[[seeds[j] for j in greedy]]
        return actions

    def step(self, i: int, state, action: int, reward: float, next_state, done: bool) -> bool:
        """``Agent.step`` of seed i: store the transition; True when its turn to learn has come (see :meth:`learn`)."""
        self.agents[i].step(state, action, reward, next_state, done)
        return i in self.queued

    def end_episode(self, i: int) -> None:
        """``Agent.end_episode`` of seed i (an n-step memory drops its queue)."""
        self.agents[i].end_episode()

    def _queue(self, i: int, experiences: Experiences, discount_factor: float) -> float:
        if i in self.queued:
            raise RuntimeError(f"seed {i} is due to learn twice: call learn() after each round of steps")
        self.queued[i] = experiences
        return float("nan")

    def learn(self) -> dict[int, float]:
        """One learning step of every queued seed, at once; their losses by seed."""
        if not self.queued:
            return {}
        seeds = sorted(self.queued)
        batch = Experiences(*map(torch.cat, zip(*(self.queued.pop(i) for i in seeds), strict=True)))
        rows = slice(None) if len(seeds) == self.n else torch.tensor(seeds, device=self.device)
        if isinstance(rows, slice):
            local, target = self.every
        else:  # copies of the rows that learn
            local, target = self.local.pieces(self.theta[rows], leaves=True), self.target_net.pieces(self.target[rows])
        self.local.bind(local), self.target_net.bind(target)
        q_targets = self.steps.bellman_targets(batch, self.steps.discount_factor)  # Double DQN's reads the local too
        q_expected = self.local(batch.states).gather(1, batch.actions)
        per_seed = (q.view(len(seeds), -1, 1) for q in (q_expected, q_targets))
        losses = vmap(self.steps.td_loss)(*per_seed)  # the named step, on each seed's minibatch
        # d(sum)/d(seed j's weights) = seed j's own gradient; as rows (k, P), in the stack's layout.
        grads = torch.cat([g.flatten(1) for g in torch.autograd.grad(losses.sum(), local)], dim=1)
        values = [checked_loss(v, self.agents[i].learn_steps) for i, v in zip(seeds, losses.tolist(), strict=True)]
        with torch.no_grad():
            if self.grad_clip:  # clip_grad_norm_'s arithmetic, each seed over its own parameters
                grads *= (self.grad_clip / (grads.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
            self.adam.step(self.theta, grads, seeds)
            target = self.target[rows].lerp_(self.theta[rows], self.steps.interpolation_parameter)
            if not isinstance(rows, slice):
                self.target[rows] = target  # the updated copy of some rows goes back
        for i, value in zip(seeds, values, strict=True):
            self.agents[i].learn_steps += 1
            self.agents[i].last_loss = value
        return dict(zip(seeds, values, strict=True))

    def local_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Seed i's local network as a plain ``Network`` state_dict (for checkpoints, videos, evaluation)."""
        return dict(zip(self.local.names, map(_copy, self.local.from_row(self.theta[i])), strict=True))

    def agent_state(self, i: int) -> dict:
        """Seed i as ``Agent.state_dict()`` gives it: a plain agent that loads it continues exactly."""
        self.write_back(i)
        return self.agents[i].state_dict()

    def write_back(self, i: int) -> None:
        """Give agent i the stack's row i: its networks' weights and its Adam state (what its run saves)."""
        agent, opt, layout = self.agents[i], self.adam, self.local
        with torch.no_grad():
            for net, rows in ((agent.local_qnetwork, self.theta), (agent.target_qnetwork, self.target)):
                for p, value in zip(net.parameters(), layout.from_row(rows[i]), strict=True):
                    p.copy_(value)
        state = agent.optimizer.state
        state.clear()
        if opt.steps[i]:  # like torch, no state before the first step
            moments = zip(layout.from_row(opt.exp_avg[i]), layout.from_row(opt.exp_avg_sq[i]), strict=True)
            for p, (m, v) in zip(agent.local_qnetwork.parameters(), moments, strict=True):
                state[p] = {"step": opt.steps[i].clone(), "exp_avg": _copy(m), "exp_avg_sq": _copy(v)}

    def load_agent_state(self, i: int, state: dict) -> None:
        """Seed i from what :meth:`agent_state` (or a plain ``Agent.state_dict()``) returned."""
        self.agents[i].load_state_dict(state)
        self._pull(i)

    def _pull(self, i: int) -> None:
        """Copy agent i's networks and Adam state into row i of the stack."""
        agent, params, layout = self.agents[i], list(self.agents[i].local_qnetwork.parameters()), self.local
        with torch.no_grad():
            self.theta[i], self.target[i] = layout.to_row(params), layout.to_row(agent.target_qnetwork.parameters())
            saved = [agent.optimizer.state.get(p, {}) for p in params]
            self.adam.steps[i].fill_(float(saved[0].get("step", 0)))
            for moment, key in ((self.adam.exp_avg, "exp_avg"), (self.adam.exp_avg_sq, "exp_avg_sq")):
                moment[i] = layout.to_row(s[key] for s in saved) if saved[0] else 0.0

    def state_dict(self) -> dict:
        """Every seed's :meth:`agent_state`: what resuming the batch needs."""
        return {"agents": [self.agent_state(i) for i in range(self.n)]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        if len(state["agents"]) != self.n:
            raise ValueError(f"the state holds {len(state['agents'])} seeds, this batch {self.n}")
        for i, agent_state in enumerate(state["agents"]):
            self.load_agent_state(i, agent_state)


def _shape(agent: Agent) -> tuple:
    """What else must match for agents to share a stack: the n-step memory and the layers' shapes."""
    return (getattr(agent.memory, "n_step", 1), *(p.shape for p in agent.local_qnetwork.parameters()))


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``t``, never a view of the stack."""
    return t.clone(memory_format=torch.contiguous_format)
