"""The ladder planner: pure, tested by equality on whole plans, plus properties over any source."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st
from media_facts import media

from transcoder.domain.rungs import DEFAULT_LADDER, Rung
from transcoder.media.ladder import (
    ColourIn,
    Plan,
    Skipped,
    Target,
    capped_fps,
    even,
    even_down,
    fit,
    plan,
)
from transcoder.media.probe import MediaInfo

BOTH = ("720p", "1080p")
T720 = Target("720p", 1280, 720, 21, 4500, 9000)
T1080 = Target("1080p", 1920, 1080, 21, 7800, 15600)
NO_UPSCALE_1080 = Skipped("1080p", "source short side 720px < 1080px (no upscaling)")


def plan_for(source: MediaInfo, wanted: tuple[str, ...] = BOTH) -> Plan:
    return plan(source, DEFAULT_LADDER, wanted, max_fps=60, gop_s=2)


def test_landscape_1080p_gets_both_rungs() -> None:
    assert plan_for(media()) == Plan(
        targets=(T720, T1080),
        skipped=(),
        video_index=0,
        audio_index=1,
        output_fps=None,
        keyint=50,
        deinterlace=False,
        colour=None,
    )


def test_display_matrix_rotation_gives_portrait_renditions_at_the_rung_short_side() -> None:
    rotated = plan_for(media(rotation=90))
    assert [(t.name, t.width, t.height) for t in rotated.targets] == [
        ("720p", 720, 1280),
        ("1080p", 1080, 1920),
    ]
    assert plan_for(media(rotation=270)).targets == rotated.targets
    assert plan_for(media(rotation=180)).targets == (T720, T1080)


def test_true_portrait_is_not_upscaled_and_keeps_its_orientation() -> None:
    portrait = plan_for(media(width=720, height=1280))
    assert portrait.targets == (Target("720p", 720, 1280, 21, 4500, 9000),)
    assert portrait.skipped == (NO_UPSCALE_1080,)


def test_720p_source_skips_1080p_with_a_reason() -> None:
    assert plan_for(media(width=1280, height=720)).targets == (T720,)
    assert plan_for(media(width=1280, height=720)).skipped == (NO_UPSCALE_1080,)


def test_source_below_the_lowest_rung_keeps_its_own_size() -> None:
    tiny = plan_for(media(width=160, height=90))
    assert tiny.targets == (Target("720p", 160, 90, 21, 4500, 9000),)
    assert tiny.skipped == (Skipped("1080p", "source short side 90px < 1080px (no upscaling)"),)


def test_odd_dimensions_round_down_to_even() -> None:
    odd = plan_for(media(width=853, height=481, pix_fmt="yuv444p"))
    assert [(t.width, t.height) for t in odd.targets] == [(852, 480)]


def test_anamorphic_pixels_are_made_square_on_the_displayed_size() -> None:
    pal_wide = plan_for(media(width=720, height=576, sar=Fraction(64, 45)))
    assert [(t.width, t.height) for t in pal_wide.targets] == [(1024, 576)]


def test_4k_source_gets_both_rungs_at_16_by_9() -> None:
    assert plan_for(media(width=3840, height=2160)).targets == (T720, T1080)


def test_only_the_requested_rungs_are_planned() -> None:
    assert plan_for(media(), ("720p",)).targets == (T720,)
    assert plan_for(media(), ("720p",)).skipped == ()


def test_a_custom_ladder_is_sorted_by_short_side() -> None:
    ladder = (
        Rung(name="480p", short_side=480, crf=24, maxrate_kbps=1500, bufsize_kbps=3000),
        *reversed(DEFAULT_LADDER),
    )
    made = plan(media(), ladder, ("480p", *BOTH), max_fps=60, gop_s=2).targets
    assert [(t.name, t.width, t.height) for t in made] == [
        ("480p", 854, 480),
        ("720p", 1280, 720),
        ("1080p", 1920, 1080),
    ]


def test_frame_rates_above_the_cap_are_divided_by_a_whole_number() -> None:
    high = plan_for(media(fps=120.0, base_fps=120.0))
    assert (high.output_fps, high.keyint) == (60.0, 120)
    assert plan_for(media(fps=100.0, base_fps=100.0)).output_fps == 50.0
    assert plan_for(media(fps=60.0, base_fps=60.0)).output_fps is None
    assert plan_for(media(fps=59.94, base_fps=59.94)).output_fps is None
    assert plan_for(media(fps=60.0, base_fps=60.0)).keyint == 120


def test_variable_frame_rate_is_made_constant_at_the_base_rate() -> None:
    vfr = plan_for(media(fps=23.333, base_fps=30.0))
    assert (vfr.output_fps, vfr.keyint) == (30.0, 60)
    screen = plan_for(media(fps=12.0, base_fps=120.0))
    assert screen.output_fps == 60.0


def test_interlaced_sources_are_deinterlaced_without_doubling_the_rate() -> None:
    interlaced = plan_for(media(field_order="tt", fps=25.0, base_fps=50.0))
    assert interlaced.deinterlace
    assert interlaced.output_fps is None
    assert interlaced.keyint == 50
    assert not plan_for(media(field_order="progressive")).deinterlace


def test_hdr_and_wide_gamut_sources_are_converted_to_bt709() -> None:
    pq = media(color_transfer="smpte2084", color_primaries="bt2020", color_space="bt2020nc")
    assert plan_for(pq).colour == ColourIn("smpte2084", "bt2020", "bt2020nc", tonemap=True)
    assert plan_for(pq).to_bt709
    hlg = media(color_transfer="arib-std-b67", color_primaries=None, color_space=None)
    assert plan_for(hlg).colour == ColourIn("arib-std-b67", "bt2020", "bt2020nc", tonemap=True)
    sdr_2020 = media(color_transfer="bt2020-10", color_primaries="bt2020", color_space="bt2020nc")
    assert plan_for(sdr_2020).colour == ColourIn("bt2020-10", "bt2020", "bt2020nc", tonemap=False)
    assert plan_for(media(color_transfer="bt709", color_primaries="bt709")).colour is None
    assert not plan_for(media()).to_bt709


def test_audio_is_optional_and_the_chosen_track_is_kept() -> None:
    assert plan_for(media(audio_index=None, audio_codec=None, audio_streams=0)).audio_index is None
    assert plan_for(media(audio_index=2, audio_streams=2)).audio_index == 2


def test_helpers() -> None:
    assert (even(719), even(721), even(1), even_down(481), even_down(1)) == (720, 720, 2, 480, 2)
    assert fit(1920, 1080, 720) == (1280, 720)
    assert fit(1080, 1920, 720) == (720, 1280)
    assert fit(721, 1281, 720) == (720, 1280)
    assert capped_fps(119.88, 60) == 59.94
    assert capped_fps(30, 60) is None


@given(
    width=st.integers(16, 8192),
    height=st.integers(16, 8192),
    rotation=st.sampled_from([0, 90, 180, 270]),
    sar=st.sampled_from([Fraction(1), Fraction(64, 45), Fraction(8, 9), Fraction(4, 3)]),
)
def test_every_plan_is_even_never_upscaled_and_keeps_orientation(
    width: int, height: int, rotation: int, sar: Fraction
) -> None:
    source = media(width=width, height=height, rotation=rotation, sar=sar)
    made = plan_for(source)
    shown_w, shown_h = source.display_width, source.display_height
    assert made.targets, "every valid source yields at least one rendition"
    assert len(made.targets) + len(made.skipped) == 2
    for target in made.targets:
        assert target.width % 2 == 0 and target.height % 2 == 0
        assert min(target.width, target.height) <= max(2, min(shown_w, shown_h))
        assert max(target.width, target.height) <= max(2, shown_w, shown_h)
        if shown_w != shown_h and min(target.width, target.height) > 2:
            assert (target.width > target.height) == (shown_w > shown_h) or (
                target.width == target.height
            )
        if min(shown_w, shown_h) >= 64:
            source_aspect = shown_w / shown_h
            assert abs(target.width / target.height - source_aspect) / source_aspect < 0.03
