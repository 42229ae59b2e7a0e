"""Vision pages in a real headless Chromium, on the hand-built vision atlas: a unit's crops load and show exactly the
square around their box cut from the whole image; hovering or focusing one shows the whole image with the box
outlined where the box is; kernels and the other units' feature visualisations show scaled up, pixelated; the layer
page shows its DeepDream and, switched to examples, crops in its grid."""

from __future__ import annotations

import httpx
import pytest

from tests.vision_fixture import FOCUS, SLUG, vision_atlas, vision_server  # noqa: F401 (fixtures)

UNIT = f"/models/{SLUG}/{FOCUS[0]}/{FOCUS[1]}"
LAYER = f"/models/{SLUG}/{FOCUS[0]}"
LOADED = "img => img.complete && img.naturalWidth > 0"


@pytest.fixture(scope="module")
def twin(vision_server: str) -> dict:
    return httpx.get(f"{vision_server}{UNIT}.json", timeout=30).json()


def wait_loaded(page, selector: str) -> int:
    """Bring each image the selector matches into view (they load lazily) and wait until it has loaded."""
    images = page.locator(selector)
    for i in range(images.count()):
        images.nth(i).scroll_into_view_if_needed()
        images.nth(i).evaluate("img => img.decode()")
    assert all(images.evaluate_all(f"imgs => imgs.map({LOADED})"))
    return images.count()


def shown_region(page, figure: str) -> dict:
    """Which part of the whole image (in its pixels) the crop's frame shows, from where the browser laid them out."""
    return page.locator(f"{figure} .crop").evaluate("""frame => {
        const f = frame.getBoundingClientRect(), img = frame.querySelector('img'), i = img.getBoundingClientRect();
        const scale = img.naturalWidth / i.width;
        return {left: (f.left - i.left) * scale, top: (f.top - i.top) * scale,
                right: (f.right - i.left) * scale, bottom: (f.bottom - i.top) * scale};
    }""")


def test_crops_load_and_show_the_square_around_their_box(page, vision_server: str, twin: dict):
    page.goto(vision_server + UNIT, wait_until="load")
    assert wait_loaded(page, "#examples .crop img") == len(twin["examples"])
    assert page.locator("#top-examples .crop img").first.evaluate(
        "img => getComputedStyle(img).imageRendering") == "pixelated"
    for crop in twin["examples"]:
        left, top, right, bottom = crop["box"]
        side = max(right - left, bottom - top)
        x0, y0 = left - (side - (right - left)) / 2, top - (side - (bottom - top)) / 2
        region = shown_region(page, f'#examples figure[data-kind="{crop["kind"]}"][data-rank="{crop["rank"]}"]')
        assert region == pytest.approx({"left": x0, "top": y0, "right": x0 + side, "bottom": y0 + side}, abs=0.35)


@pytest.mark.parametrize("how", ["hover", "focus"])
def test_hover_or_focus_shows_the_whole_image_with_the_box(page, vision_server: str, twin: dict, how: str):
    page.goto(vision_server + UNIT, wait_until="load")
    crop = next(c for c in twin["examples"] if c["box"][3] - c["box"][1] < c["box"][2] - c["box"][0])  # clipped
    figure = page.locator(f'#top-examples figure[data-rank="{crop["rank"]}"]')
    popup = figure.locator(".popup")
    assert popup.is_hidden()
    page.mouse.move(1, 1)
    figure.hover() if how == "hover" else figure.focus()
    popup.wait_for(state="visible")
    whole = figure.locator(".whole img")
    whole.evaluate("img => img.decode()")
    assert whole.evaluate(LOADED) and whole.evaluate("img => img.naturalWidth") == crop["image"]["width"]
    image, outline = whole.bounding_box(), figure.locator(".whole .box").bounding_box()
    scale = crop["image"]["width"] / image["width"]
    left, top, right, bottom = crop["box"]
    assert (outline["x"] - image["x"]) * scale == pytest.approx(left, abs=0.5)
    assert (outline["y"] - image["y"]) * scale == pytest.approx(top, abs=0.5)
    assert outline["width"] * scale == pytest.approx(right - left, abs=0.5)
    assert outline["height"] * scale == pytest.approx(bottom - top, abs=0.5)
    assert crop["item"] in popup.inner_text()
    if how == "focus":
        page.keyboard.press("Tab")  # focus moves to the next example: this one's whole image goes away
        popup.wait_for(state="hidden")


def test_kernels_and_thumbnails_show_scaled_up_beside_each_other(page, vision_server: str, twin: dict):
    page.goto(vision_server + UNIT, wait_until="load")
    kernels, thumbs = "#weights-in img.kernel", "#weights-in img.thumb"
    assert wait_loaded(page, kernels) == len(twin["edges"]["in"]["shown"])
    assert wait_loaded(page, thumbs) == sum(1 for e in twin["edges"]["in"]["shown"] if e["thumbnail"])
    kernel = page.locator(kernels).first
    assert kernel.evaluate("img => [img.naturalWidth, getComputedStyle(img).imageRendering]") == [3, "pixelated"]
    box, thumb = kernel.bounding_box(), page.locator(thumbs).first.bounding_box()
    assert box["width"] >= 8 * 3 and thumb["x"] > box["x"] + box["width"] - 1  # scaled up; the thumbnail beside it
    assert abs(thumb["y"] - box["y"]) < 2
    assert wait_loaded(page, "#weights-out img.kernel") == len(twin["edges"]["out"]["shown"])


def test_layer_page_shows_its_deepdream_and_a_grid_of_top_examples(page, vision_server: str):
    page.goto(vision_server + LAYER, wait_until="load")
    dream = page.locator("#deepdream img")
    assert dream.is_visible() and dream.evaluate(LOADED)
    assert dream.bounding_box()["width"] >= 128  # scaled up from 64 pixels
    assert wait_loaded(page, "#layer-views .caricature img") == 2
    page.locator("#thumbnail-example").click()
    page.wait_for_url(f"{vision_server}{LAYER}?thumbnail=example")
    assert wait_loaded(page, ".thumbs .crop img") == page.locator(".thumbs .cell").count() > 0
