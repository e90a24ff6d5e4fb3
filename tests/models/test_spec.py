"""Scheduler names with a sigma suffix ("<Class>:karras"): parsing, what each family allows, and
the config the manager builds from them; the size presets each family offers. Torch-free: these
are spec data and small functions."""

from __future__ import annotations

import pytest

from imagine.models import spec as spec_module
from imagine.models.families import FAMILIES
from imagine.models.spec import (
    SIGMA_OPTIONS,
    scheduler_allowed,
    scheduler_config,
    sigma_options_table,
    size_presets,
    split_scheduler,
    supported_sigma_options,
)


@pytest.fixture
def with_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if scipy were installed, so beta sigmas are on offer whatever this machine has."""
    monkeypatch.setattr(spec_module, "_installed", lambda module: True)


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("EulerDiscreteScheduler", ("EulerDiscreteScheduler", None)),
        ("EulerDiscreteScheduler:karras", ("EulerDiscreteScheduler", "karras")),
        ("EulerDiscreteScheduler:", ("EulerDiscreteScheduler", "")),
        ("A:b:c", ("A", "b:c")),
    ],
)
def test_split_scheduler(name: str, parts: tuple[str, str | None]) -> None:
    assert split_scheduler(name) == parts


def test_every_family_offers_only_known_options_on_its_own_schedulers() -> None:
    for family, spec in FAMILIES.items():
        for name, options in spec.sigma_options.items():
            assert name in spec.schedulers, (family, name)
            assert set(options) <= set(SIGMA_OPTIONS), (family, name)


@pytest.mark.usefixtures("with_scipy")
def test_what_the_families_allow() -> None:
    sd, flux, shapes = FAMILIES["sd"], FAMILIES["flux"], FAMILIES["shapes"]
    assert supported_sigma_options(sd, "EulerDiscreteScheduler") == (
        "karras",
        "exponential",
        "beta",
    )
    assert supported_sigma_options(sd, "DDIMScheduler") == ()  # diffusers would ignore the flag
    assert supported_sigma_options(flux, "UniPCMultistepScheduler") == ("karras",)
    assert supported_sigma_options(flux, "DPMSolverMultistepScheduler") == ()
    assert "beta" not in supported_sigma_options(shapes, "DPMSolverMultistepScheduler")
    assert scheduler_allowed(sd, "DPMSolverMultistepScheduler:karras")
    assert scheduler_allowed(sd, "DPMSolverMultistepScheduler")
    for refused in ("DDIMScheduler:karras", "EulerDiscreteScheduler:", "EulerDiscreteScheduler:x"):
        assert not scheduler_allowed(sd, refused), refused
    assert not scheduler_allowed(flux, "DPMSolverMultistepScheduler:karras")
    assert not scheduler_allowed(sd, "FlowMatchEulerDiscreteScheduler:karras")
    table = sigma_options_table(flux)
    assert table == {
        "FlowMatchEulerDiscreteScheduler": ["karras", "exponential", "beta"],
        "UniPCMultistepScheduler": ["karras"],
    }


def test_beta_sigmas_need_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    # diffusers raises ImportError building a beta-sigmas scheduler without scipy: never offer it.
    monkeypatch.setattr(spec_module, "_installed", lambda module: module != "scipy")
    sd = FAMILIES["sd"]
    assert supported_sigma_options(sd, "EulerDiscreteScheduler") == ("karras", "exponential")
    assert not scheduler_allowed(sd, "EulerDiscreteScheduler:beta")
    assert "beta" not in sigma_options_table(sd)["EulerDiscreteScheduler"]


def test_scheduler_config() -> None:
    flux = FAMILIES["flux"]
    assert scheduler_config(flux, "FlowMatchEulerDiscreteScheduler") == (
        "FlowMatchEulerDiscreteScheduler",
        {},
    )
    name, config = scheduler_config(flux, "UniPCMultistepScheduler:karras")
    # The class's own overrides (flow sigmas) stay, the option's flag is set, and the other
    # sigma flags are off even if the model's config carries one.
    assert name == "UniPCMultistepScheduler"
    assert config["use_flow_sigmas"] is True and config["use_karras_sigmas"] is True
    assert config["use_exponential_sigmas"] is False and config["use_beta_sigmas"] is False
    # No suffix: only the overrides, so the model's own sigma schedule is kept.
    assert scheduler_config(flux, "UniPCMultistepScheduler")[1] == dict(
        flux.scheduler_overrides["UniPCMultistepScheduler"]
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_size_presets_are_valid_sizes_at_most_the_native_area(family: str) -> None:
    spec = FAMILIES[family]
    presets = size_presets(spec, max_pixels=spec.default_width * spec.default_height * 64)
    assert presets[0] == (spec.default_width, spec.default_height)
    assert len(presets) == len(set(presets)) >= 3
    for width, height in presets:
        assert width % spec.size_multiple == 0 and height % spec.size_multiple == 0
    assert any(w > h for w, h in presets) and any(w < h for w, h in presets)
    if not spec.size_presets:  # derived from the aspect ratios: never above the native area
        assert all(w * h <= spec.default_width * spec.default_height for w, h in presets)


def test_size_presets_leave_out_sizes_over_max_pixels() -> None:
    shapes = FAMILIES["shapes"]
    assert (512, 512) in size_presets(shapes, max_pixels=1 << 20)
    small = size_presets(shapes, max_pixels=128 * 128)
    assert small and all(w * h <= 128 * 128 for w, h in small) and (512, 512) not in small


def test_only_the_embedded_model_draws_at_a_size_of_its_own() -> None:
    assert {name for name, spec in FAMILIES.items() if spec.render_size} == {"shapes"}
    shapes = FAMILIES["shapes"]
    assert shapes.render_size == (shapes.default_width, shapes.default_height)
