"""The site in a real headless Chromium: unit images load, and the keyboard walks units and climbs to the layer."""

from pathlib import Path

import httpx


def first_rendered_unit(live_server: str) -> dict:
    """The JSON of the first unit with images in the first layer that has any."""
    with httpx.Client(base_url=live_server, timeout=30) as client:
        model = client.get(client.get("/.json").json()["models"][0]["json_url"]).json()
        layer = client.get(next(layer for layer in model["layers"] if layer["n_rendered"])["json_url"]).json()
        return client.get(next(u for u in layer["units"] if u["image"])["json_url"]).json()


def test_unit_page_images_and_keyboard(page, live_server: str, tmp_path: Path):
    unit = first_rendered_unit(live_server)
    page.goto(live_server + unit["url"], wait_until="load")
    widths = page.eval_on_selector_all(".unit-image img", "imgs => imgs.map(img => img.complete && img.naturalWidth)")
    assert len(widths) == len(unit["images"]) > 0
    assert all(w and w > 0 for w in widths), widths
    assert page.eval_on_selector(".unit-image img", "img => getComputedStyle(img).imageRendering") == "pixelated"
    shot = tmp_path / "unit.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0

    page.keyboard.press("ArrowRight")
    page.wait_for_url(live_server + unit["next"]["url"])
    page.keyboard.press("k")
    page.wait_for_url(live_server + unit["url"])
    page.keyboard.press("ArrowUp")
    page.wait_for_url(live_server + unit["up"]["url"])
    assert page.locator(".thumbs .cell").count() > 0
    page.locator(f'.thumbs a[href="{unit["url"]}"] img').scroll_into_view_if_needed()  # thumbnails load lazily
    page.wait_for_function(f"""() => document.querySelector('.thumbs a[href="{unit["url"]}"] img').naturalWidth > 0""")
