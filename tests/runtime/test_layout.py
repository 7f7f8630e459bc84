"""runtime/layout.py's choice of channels-last tensors over stand-in kernels: a tensor goes
channels-last only when its producer and all its readers offer it, one of them gains, nothing
outside the steps reads it, and tied inputs follow their kernel's output."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgerun.runtime.layout import ChannelsLastOffer, lay_out


class Stand:
    """A prepared kernel that offers `offer` and records what it was told."""

    def __init__(self, offer: ChannelsLastOffer | None) -> None:
        self.offer, self.told = offer, None

    def channels_last(self):
        return self.offer

    def use_channels_last(self, inputs, output):
        self.told = (set(inputs), output)
        self.run = self.run_last

    def run(self, ins, outs):
        pass

    def run_last(self, ins, outs):
        pass


PW = ChannelsLastOffer(frozenset({0}), True)
DW = ChannelsLastOffer(frozenset({0}), True, gains=True)
FUSED = ChannelsLastOffer(frozenset({0, 1}), True, frozenset({1}))


def steps_for(*specs):
    """specs: (offer, input names, output name) per step -> (steps, kernels)."""
    kernels, steps = [], []
    for offer, inputs, output in specs:
        kernel = Stand(offer)
        node = SimpleNamespace(inputs=list(inputs), outputs=[output])
        kernels.append(kernel)
        steps.append((kernel.run, [None] * len(inputs), [None], node))
    return steps, kernels


def test_a_region_around_a_depthwise_convolution():
    steps, (expand, dw, project) = steps_for((PW, ["x"], "a"), (DW, ["a"], "b"), (PW, ["b"], "y"))
    assert lay_out(steps, keep={"y"}) == 2
    assert expand.told == (set(), True) and dw.told == ({0}, True) and project.told == ({0}, False)
    assert [s[0].__name__ for s in steps] == ["run_last"] * 3


def test_no_region_without_a_kernel_that_gains():
    steps, kernels = steps_for((PW, ["x"], "a"), (PW, ["a"], "y"))
    assert lay_out(steps, keep={"y"}) == 0
    assert all(k.told is None for k in kernels) and steps[0][0].__name__ == "run"


@pytest.mark.parametrize("case", ["output", "reader without offer", "reader offers other input"])
def test_tensors_read_from_outside_stay_nchw(case):
    other = ChannelsLastOffer(frozenset({0}), True)  # offers slot 0; "b" comes at slot 1
    readers = {"output": [], "reader without offer": [(None, ["b"], "z")],
               "reader offers other input": [(other, ["q", "b"], "z")]}[case]
    steps, (_, dw, *_) = steps_for((PW, ["x"], "a"), (DW, ["a"], "b"), *readers)
    lay_out(steps, keep={"b", "z"} if case == "output" else {"z"})
    assert dw.told == ({0}, False)  # its input channels-last, its output not


def test_tied_residual_follows_the_output():
    # "r" could go channels-last (a dw makes it, a fused conv reads it as its residual), but the
    # fused conv's output "y" is a signature output: the residual stays NCHW with it
    steps, (_, dw, fused) = steps_for((PW, ["x"], "a"), (DW, ["a"], "r"), (FUSED, ["a", "r"], "y"))
    assert lay_out(steps, keep={"y"}) == 1  # "a" only
    assert dw.told == ({0}, False) and fused.told == ({0}, False)


def test_a_value_read_twice_by_one_step_needs_both_slots():
    both = ChannelsLastOffer(frozenset({0}), True, gains=True)
    steps, (_, add) = steps_for((PW, ["x"], "a"), (both, ["a", "a"], "y"))
    assert lay_out(steps, keep={"y"}) == 0 and add.told is None


def test_a_layout_keeping_kernel_carries_the_gain_on():
    # dw -> mul (output tied to input 0) -> project: "c" is next to no gaining kernel itself
    mul = ChannelsLastOffer(frozenset({0, 1}), True, frozenset({0}))
    steps, (_, dw, scale, project) = steps_for((PW, ["x"], "a"), (DW, ["a"], "b"), (mul, ["b", "s"], "c"),
                                              (PW, ["c"], "y"))
    assert lay_out(steps, keep={"y"}) == 3
    assert dw.told == ({0}, True) and scale.told == ({0}, True) and project.told == ({0}, False)
