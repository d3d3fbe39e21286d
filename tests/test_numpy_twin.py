"""The NumPy twin against the textbook path, copies of agents, and which path a run really takes."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import main
import nnetwork
from agent import Agent, Experiences
from dqnkit.errors import UserError
from dqnkit.learn import build_agent, make_agent, twin
from dqnkit.learn.numpy_adam import NumpyAdam, numpy_adam_step
from dqnkit.learn.options import OptionsAgent, row_max
from dqnkit.learn.twin import (
    NumpyAgent,
    check_network,
    numpy_forward,
    numpy_q_values,
    numpy_views,
    relu_,
    td_loss_and_slope,
)
from nnetwork import DuelingNetwork, Network

ROOT = Path(__file__).resolve().parent.parent


def _filled(backprop: str, **options) -> Agent:
    """An agent (of ``main.Config(backprop=backprop, **options)``) with 200 random transitions in its memory.

    The same seed gives the same agent.
    """
    torch.manual_seed(7)
    cfg = main.Config(backprop=backprop, minibatch_size=32, **options)
    agent = make_agent(cfg, 8, 4, "cpu", np.random.default_rng(7))
    rng = np.random.default_rng(8)
    for i in range(200):
        s, s2 = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
        agent.memory.push((s, i % 4, float(rng.normal()), s2, i % 9 == 0))
    return agent


# ---------------------------------------------------------------- the NumPy arithmetic


def test_numpy_q_values_match_forward() -> None:
    net = Network(8, 4, 0)
    states = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    views = numpy_views(net)
    expected = net(torch.from_numpy(states)).detach().numpy()
    for s, e in zip(states, expected, strict=True):
        np.testing.assert_allclose(numpy_q_values(views, s), e, rtol=1e-5, atol=1e-6)
        assert int(np.argmax(numpy_q_values(views, s))) == int(np.argmax(e))
    # A whole minibatch, and the hidden activations the backward pass reads.
    q, h1, h2 = numpy_forward(views, states)
    with torch.no_grad():
        h1_torch = torch.relu(net.fc1(torch.from_numpy(states)))
        h2_torch = torch.relu(net.fc2(h1_torch))
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h1, h1_torch.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2, h2_torch.numpy(), rtol=1e-5, atol=1e-6)
    # The views are the parameters' memory: a change in place shows at once.
    with torch.no_grad():
        net.fc3.bias.add_(1.0)
    np.testing.assert_allclose(numpy_q_values(views, states), expected + 1.0, rtol=1e-5, atol=1e-5)


def test_row_max_is_max_over_each_row() -> None:
    x = np.array([[1.0, -2.0, 3.0, 0.5], [-1.0, -0.5, -3.0, -0.25], [np.inf, 0.0, 1.0, 2.0]], dtype=np.float32)
    np.testing.assert_array_equal(row_max(x), [[3.0], [-0.25], [np.inf]])
    wide = np.random.default_rng(0).normal(size=(100, 18)).astype(np.float32)
    np.testing.assert_array_equal(row_max(wide), wide.max(axis=1, keepdims=True))
    np.testing.assert_array_equal(row_max(torch.from_numpy(wide)).numpy(), row_max(wide))  # the autograd path's


@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "importance weights"])
def test_td_loss_and_slope_is_the_loss_and_its_autograd_derivative(loss: str, weighted: bool) -> None:
    """By hand first, errors 0.5 and -3 (weights 1 and 0.5); then against autograd on 64 random errors."""
    td_error, weights = np.array([0.5, -3.0]), np.array([1.0, 0.5]) if weighted else None
    value, slope = td_loss_and_slope(td_error, loss == "huber", weights)
    w = weights if weighted else np.ones(2)
    if loss == "mse":  # mean of w * e^2; slope 2 * w * e / n
        assert value == pytest.approx((0.25 * w[0] + 9.0 * w[1]) / 2)
        assert slope.tolist() == pytest.approx([0.5 * w[0], -3.0 * w[1]])
    else:  # Huber: 0.5 e^2 within 1, |e| - 0.5 beyond; slope clip(e, -1, 1) * w / n
        assert value == pytest.approx((0.125 * w[0] + 2.5 * w[1]) / 2)
        assert slope.tolist() == pytest.approx([0.25 * w[0], -0.5 * w[1]])
    rng = np.random.default_rng(0)
    errors = (3 * rng.standard_normal(64)).astype(np.float32)
    weights = rng.random(64).astype(np.float32) if weighted else None
    q = torch.tensor(errors, requires_grad=True)  # Q minus a target of 0: the TD error as the loss sees it
    elementwise = F.smooth_l1_loss if loss == "huber" else F.mse_loss
    losses = elementwise(q, torch.zeros(64), reduction="none")
    expected = (losses * torch.from_numpy(weights)).mean() if weighted else losses.mean()
    expected.backward()
    value, slope = td_loss_and_slope(errors, loss == "huber", weights)
    assert value == pytest.approx(expected.item(), rel=1e-5)
    np.testing.assert_allclose(slope, q.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_numpy_adam_step_is_the_plain_formula_to_the_bit() -> None:
    """Its scratch arrays change no rounding: the same operations, in the same order, as the formula."""
    rng = np.random.default_rng(0)
    param, grad = rng.normal(size=500).astype(np.float32), rng.normal(size=500).astype(np.float32)
    exp_avg, exp_avg_sq = 0.1 * rng.normal(size=500).astype(np.float32), rng.random(500).astype(np.float32)
    p, m, v = param.copy(), exp_avg.copy(), exp_avg_sq.copy()
    for step in (1, 2, 3):
        numpy_adam_step(param, grad, exp_avg, exp_avg_sq, step, 1e-3, (0.9, 0.999), 1e-8)
        m = m + (1.0 - 0.9) * (grad - m)
        v = v * 0.999 + (1.0 - 0.999) * np.square(grad)
        denom = np.sqrt(v) / (1.0 - 0.999**step) ** 0.5 + 1e-8
        p = p - (1e-3 / (1.0 - 0.9**step)) * m / denom
        for got, want in ((param, p), (exp_avg, m), (exp_avg_sq, v)):
            np.testing.assert_array_equal(got, want)


def test_relu_in_place_by_hand_and_its_zeros_stay_zero() -> None:
    x = np.array([[-2.0, -0.0, 0.0, 3.5], [2.0**-100, -(2.0**-100), 7.0, -7.0]], dtype=np.float32)
    out = relu_(x)
    assert out is x  # in place
    np.testing.assert_array_equal(x, [[0.0, 0.0, 0.0, 3.5], [2.0**-100, 0.0, 7.0, 0.0]])
    y = np.array([-1.0, 2.0], dtype=np.float64)  # another dtype, another shape
    np.testing.assert_array_equal(relu_(y), [0.0, 2.0])
    again = np.full((2, 4), -5.0, dtype=np.float32)  # the cached zero array was not written into
    np.testing.assert_array_equal(relu_(again), np.zeros((2, 4)))


def _same_minibatches(fast: Agent, plain: Agent, n: int) -> list[tuple[Experiences, Experiences]]:
    """``n`` minibatches drawn by ``fast``'s memory (NumPy arrays) and the same rows from ``plain``'s (tensors)."""
    pairs = []
    for _ in range(n):
        state = fast.memory.rng.bit_generator.state
        batch = fast.memory.sample(32)  # NumPy arrays: the twin's memory makes no tensors
        plain.memory.rng.bit_generator.state = state
        tensors = plain.memory.sample(32)  # the same rows, drawn by the same generator, as tensors
        assert isinstance(batch.states, np.ndarray) and all(
            np.array_equal(a, t.numpy()) for a, t in zip(batch, tensors, strict=True)
        )
        pairs.append((batch, tensors))
    return pairs


def test_numpy_backprop_equals_autograd() -> None:
    """The twin against the textbook agent: same loss, same gradients, same weights, step after step."""
    fast, plain = _filled("numpy"), _filled("autograd")
    assert type(fast) is NumpyAgent and type(plain) is Agent  # no option on: the twin and the textbook agent
    assert type(plain.optimizer) is torch.optim.Adam and type(fast.optimizer) is NumpyAdam
    for a, b in zip(fast.local_qnetwork.parameters(), plain.local_qnetwork.parameters(), strict=True):
        assert torch.equal(a, b)  # same start
    for batch, tensors in _same_minibatches(fast, plain, 20):
        loss_fast = fast.learn(batch, 0.99)
        loss_plain = plain.learn(tensors, 0.99)
        assert loss_fast == pytest.approx(loss_plain, rel=1e-5)
        for a, b in zip(fast.local_qnetwork.parameters(), plain.local_qnetwork.parameters(), strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(fast, net).parameters(), getattr(plain, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_twin_runs_the_named_steps_of_options_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets, priorities, the optimizer step and the target update are OptionsAgent's, once per learning step."""
    shared = ("learn", "bellman_targets", "replayed", "optimizer_step", "update_target", "step", "td_loss")
    assert not set(shared) & set(vars(NumpyAgent))  # inherited, never rewritten
    calls = {name: _count_calls(monkeypatch, OptionsAgent, name) for name in shared if name != "td_loss"}
    # Its own: one learning step with the derivative written out, and the clipping on its flat gradient.
    calls |= {name: _count_calls(monkeypatch, NumpyAgent, name) for name in ("learn_once", "clip_gradient")}
    backward = _count_calls(monkeypatch, torch.Tensor, "backward")
    td_loss = _count_calls(monkeypatch, OptionsAgent, "td_loss")
    options = {"double_dqn": True, "n_step": 3, "prioritized_replay": True, "grad_clip": 1.0, "gradient_steps": 2}
    agent = _filled("numpy", target_update_every=2, lr_decay_steps=1000, **options)
    _learn_three_times(agent)  # three learning turns of two learning steps each
    assert agent.learn_steps == 6 and len(calls["step"]) == 12 and len(calls["learn"]) == 3
    for name in ("learn_once", "bellman_targets", "replayed", "optimizer_step", "update_target", "clip_gradient"):
        assert len(calls[name]) == 6, name
    assert not backward and not td_loss  # the twin writes the loss's derivative itself


def test_a_new_option_in_a_named_step_works_on_the_twin_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """An option written once, in OptionsAgent.bellman_targets (targets clipped to [-1, 1]): the twin has it."""
    bellman_targets = OptionsAgent.bellman_targets

    def clipped(self: OptionsAgent, experiences: Experiences, discount_factor: float):
        return bellman_targets(self, experiences, discount_factor).clip(-1.0, 1.0)  # tensors and arrays alike

    fast, plain = _filled("numpy", double_dqn=True), _filled("autograd", double_dqn=True)
    pairs = _same_minibatches(fast, plain, 10)
    assert np.abs(fast.bellman_targets(pairs[0][0], 0.99)).max() > 1.0  # unclipped, some targets lie beyond 1
    monkeypatch.setattr(OptionsAgent, "bellman_targets", clipped)
    assert np.abs(fast.bellman_targets(pairs[0][0], 0.99)).max() == 1.0
    for batch, tensors in pairs:
        assert fast.learn(batch, 0.99) == pytest.approx(plain.learn(tensors, 0.99), rel=1e-5)
    for net in ("local_qnetwork", "target_qnetwork"):
        for a, b in zip(getattr(fast, net).parameters(), getattr(plain, net).parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_twin_acts_like_the_textbook_agent() -> None:
    fast, plain = _filled("numpy"), _filled("autograd")
    states = np.random.default_rng(4).normal(size=(100, 8)).astype(np.float32)
    assert [fast.greedy_action(s) for s in states] == [plain.greedy_action(s) for s in states]
    assert [fast.act(s, 0.5) for s in states] == [plain.act(s, 0.5) for s in states]  # same draws


def test_optimizer_states_move_between_numpy_adam_and_torch_adam() -> None:
    """A state saved on either path loads on the other, and both then take the same next step."""
    fast, plain = _filled("numpy"), _filled("autograd")
    assert fast.optimizer.state_dict()["state"] == plain.optimizer.state_dict()["state"] == {}  # none before a step
    for _ in range(5):
        fast.learn(fast.memory.sample(32), 0.99)
    saved = fast.optimizer.state_dict()
    assert saved["param_groups"] == [{**plain.optimizer.state_dict()["param_groups"][0]}]  # the same format
    assert [float(saved["state"][i]["step"]) for i in range(6)] == [5.0] * 6
    plain.load_state_dict(fast.state_dict())
    back = _filled("numpy")
    back.load_state_dict(plain.state_dict())
    for i, entry in saved["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(plain.optimizer.state_dict()["state"][i][key], entry[key])
            assert torch.equal(back.optimizer.state_dict()["state"][i][key], entry[key])
    batch = fast.memory.sample(32)
    tensors = Experiences(*(torch.from_numpy(a) for a in batch))  # the textbook agent learns from tensors
    for agent, experiences in ((fast, batch), (plain, tensors), (back, batch)):
        agent.learn(experiences, 0.99)
    for a, b, c in zip(*(x.local_qnetwork.parameters() for x in (fast, plain, back)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert torch.equal(a, c)  # NumPy to NumPy through torch's format: exactly the same


# ---------------------------------------------------------------- copies


AGENTS = {
    "textbook": ("autograd", {}),
    "options": ("autograd", {"double_dqn": True, "dueling": True, "n_step": 3, "prioritized_replay": True}),
    "numpy": ("numpy", {}),
    "numpy_options": ("numpy", {"dueling": True, "target_update_every": 2, "grad_clip": 1.0}),
}


def _weights(agent: Agent) -> list[torch.Tensor]:
    return [p.detach().clone() for net in (agent.local_qnetwork, agent.target_qnetwork) for p in net.parameters()]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("kind", list(AGENTS))
def test_a_copy_learns_on_its_own_parameters(kind: str, how: str) -> None:
    backprop, options = AGENTS[kind]
    original = _filled(backprop, **options)
    assert type(original) is {"textbook": Agent, "options": OptionsAgent}.get(kind, NumpyAgent)
    _learn_three_times(original)  # some Adam state and a learning rhythm to carry over
    twin = copy.deepcopy(original) if how == "deepcopy" else pickle.loads(pickle.dumps(original))
    assert type(twin) is type(original)
    before = _weights(original)
    _learn_three_times(twin)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(original), strict=True)), "the original moved"
    assert any(not torch.equal(a, b) for a, b in zip(before, _weights(twin), strict=True)), "the copy did not learn"
    # The original's generator has not moved either, so the same steps take it exactly where the copy went.
    _learn_three_times(original)
    for a, b in zip(_weights(original), _weights(twin), strict=True):
        assert torch.equal(a, b)


def _learn_three_times(agent: Agent) -> None:
    """Twelve steps through ``step``: with ``learn_every`` 4, three learning turns (of ``gradient_steps`` each)."""
    before = agent.learn_steps
    for i in range(12):
        agent.step(np.full(8, 0.1 * i, np.float32), i % 4, 1.0, np.full(8, 0.2, np.float32), False)
    assert agent.learn_steps == before + 3 * getattr(agent, "gradient_steps", 1)


# ---------------------------------------------------------------- what the twin refuses


class _WithDropout(Network):
    """A reader's change: dropout after the first layer (a new module)."""

    def __init__(self, state_size: int, action_size: int, seed: int | None = None, *, hidden_size: int = 64) -> None:
        super().__init__(state_size, action_size, seed, hidden_size=hidden_size)
        self.dropout = nn.Dropout(0.1)


def _tanh_forward(self: Network, state: torch.Tensor) -> torch.Tensor:
    """A reader's change that adds no module: tanh instead of ReLU."""
    return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(state)))))


def test_the_shipped_networks_pass_the_check() -> None:
    check_network(Network(8, 4))
    check_network(DuelingNetwork(8, 4, hidden_size=16))
    check_network(Network(8, 4, 3, hidden_size=32))


def test_a_network_with_another_module_is_refused() -> None:
    net = Network(8, 4)
    net.fc4 = nn.Linear(4, 4)
    for changed in (_WithDropout(8, 4), net):
        with pytest.raises(ValueError, match="--backprop autograd") as info:
            check_network(changed)
        assert "\n" not in str(info.value)


def test_a_changed_forward_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nnetwork.Network, "forward", _tanh_forward)
    with pytest.raises(ValueError, match="computes something else"):
        check_network(Network(8, 4))
    env = main.make_env("LunarLander-v3", 100)
    with pytest.raises(UserError, match="use --backprop autograd"):
        build_agent(main.Config(backprop="numpy"), env, torch.device("cpu"), np.random.default_rng(0))
    # The textbook path trains whatever the network computes.
    assert type(build_agent(main.Config(), env, torch.device("cpu"), np.random.default_rng(0))) is Agent


def test_the_command_line_refuses_a_changed_network_in_one_line(tmp_path: Path) -> None:
    code = (
        "import sys, torch, nnetwork, main;"
        "nnetwork.Network.forward = lambda self, s: self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(s)))));"
        "sys.exit(main.main(['--backprop', 'numpy', '--episodes', '1', '--no-video', '--quiet',"
        f"'--checkpoint', r'{tmp_path / 'w.pth'}']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_env())
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "--backprop autograd" in result.stderr
    assert not (tmp_path / "w.pth").exists()


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


# ---------------------------------------------------------------- which path a run takes


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Count the calls of ``owner.name`` while still running it."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("backprop", ["autograd", "numpy"])
def test_a_run_learns_on_the_path_it_was_asked_for(
    backprop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run calls loss.backward(), torch.optim.Adam.step() and Agent.soft_update; the twin only with
    --backprop numpy, where the chain rule is ``_backpropagate`` and the soft update one lerp_ on flat buffers."""
    backward = _count_calls(monkeypatch, torch.Tensor, "backward")
    adam_step = _count_calls(monkeypatch, torch.optim.Adam, "step")
    by_hand = _count_calls(monkeypatch, twin, "_backpropagate")
    learned = _count_calls(monkeypatch, Agent, "soft_update")
    cfg = main.Config(episodes=3, max_steps=60, minibatch_size=16, video=False, checkpoint="w.pth", quiet=True)
    if backprop == "numpy":
        cfg = main.Config(**{**cfg.__dict__, "backprop": "numpy"})
    main.train(cfg, out=lambda _: None, root=tmp_path)
    if backprop == "autograd":
        assert len(backward) == len(adam_step) == len(learned) > 5 and not by_hand
    else:
        assert len(by_hand) > 5 and not backward and not adam_step and not learned
