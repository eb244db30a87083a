"""The documentation's screenshots of the attention page and the run report, from a trained quickstart run.

    minitx train configs/quickstart.yaml && minitx eval runs/quickstart
    python scripts/readme_screenshots.py [--run-dir runs/quickstart] [--heads RUN/heads/heads.html]
    python scripts/readme_screenshots.py --steps RUN/attention/attention.html

With --heads PAGE, instead, the top of a `minitx heads` page (docs/attention.md shows the
Multi30k model's) as scripts/screenshots/heads.png. With --steps PAGE, the step-by-step view of
an attention page (cross-attention, layer 1, head 2, query 2: docs/attention.md shows the
Multi30k model's) as scripts/screenshots/attention_steps.png.

Needs Chromium and chromedriver (Debian: chromium chromium-driver) and `pip install
'minitx[browser]'`. Writes scripts/screenshots/attention_page.png and scripts/screenshots/report.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select

OUT = Path(__file__).resolve().parent / "screenshots"


def browser(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(
        options=options, service=webdriver.ChromeService(shutil.which("chromedriver"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--heads", type=Path, default=None, help="a heads.html to show")
    parser.add_argument("--steps", type=Path, default=None, help="an attention.html to show")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.steps is not None:
        steps_screenshot(args.steps)
        return
    if args.heads is not None:
        driver = browser(1100, 760)
        driver.get(args.heads.resolve().as_uri())
        driver.save_screenshot(str(OUT / "heads.png"))
        driver.quit()
        print(f"wrote {OUT / 'heads.png'}")
        return
    minitx = [sys.executable, "-m", "minitx"]
    text = "seventy two thousand three hundred forty one"
    subprocess.run([*minitx, "attention", str(args.run_dir), text, "--html", "-q"], check=True)
    subprocess.run([*minitx, "report", str(args.run_dir), "-q"], check=True)

    driver = browser(1100, 560)
    driver.get((args.run_dir / "attention" / "attention.html").resolve().as_uri())
    Select(driver.find_element("id", "kind")).select_by_value("cross")
    Select(driver.find_element("id", "layer")).select_by_value("0")
    token = driver.find_elements("css selector", "#lines text.query")[1]
    ActionChains(driver).move_to_element(token).perform()
    driver.save_screenshot(str(OUT / "attention_page.png"))
    driver.quit()

    driver = browser(1100, 900)
    driver.get((args.run_dir / "report.html").resolve().as_uri())
    driver.save_screenshot(str(OUT / "report.png"))
    driver.quit()
    print(f"wrote {OUT / 'attention_page.png'} and {OUT / 'report.png'}")


def steps_screenshot(page: Path) -> None:
    driver = browser(1100, 2200)
    driver.get(page.resolve().as_uri())
    for control, value in (("kind", "cross"), ("layer", "1"), ("head", "2"), ("query", "2")):
        Select(driver.find_element("id", control)).select_by_value(value)
    steps = driver.find_element("id", "steps")
    driver.execute_script("arguments[0].scrollIntoView()", steps)
    steps.screenshot(str(OUT / "attention_steps.png"))
    driver.quit()
    print(f"wrote {OUT / 'attention_steps.png'}")


if __name__ == "__main__":
    main()
