#!/usr/bin/python3
"""The report of `maskrcnn explain` in a real browser (headless Chromium driven
by Selenium): write the report of one photo, open it from file://, and find its
eight stages in order, each titled, every picture an embedded data: image that
decodes, pictures in the stages that draw them, the stage times in the result,
nothing fetched and no console errors. Saves a full-page screenshot. Then a
text file given as the photo: exit non-zero, one line on stderr naming the
file, and no report nor temporary file left behind.

usage: browser_report_test.py MASKRCNN_BIN PHOTO ARTIFACT_DIR

The model is the serve page test's (tests/support/browser_util.py): torchvision's
Mask R-CNN (ResNet-18-FPN, 4 classes) with seeded random weights whose
detections on the photo mix the classes and spread their scores.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "support"))
from browser_util import browser, check, fail, write_labels, write_model  # noqa: E402

STAGES = ["transform", "backbone", "anchors", "rpn", "box-head", "roi-align", "mask-head", "result"]
WITH_PICTURES = ["backbone", "anchors", "rpn", "roi-align", "mask-head", "result"]
MAX_BYTES = 15 * 1024 * 1024
MAX_SCREENSHOT_HEIGHT = 12000
WIDTH = 1400

# What the page holds, read in the browser after it has loaded.
PAGE_FACTS = r"""
const stages = Array.from(document.querySelectorAll('section.stage')).map(s => {
  const h2 = s.querySelector('h2');
  return {id: s.id, title: h2 ? h2.textContent.trim() : null, images: s.querySelectorAll('img').length};
});
const images = Array.from(document.images).map(i => ({
  src: (i.getAttribute('src') || '').slice(0, 40), complete: i.complete,
  width: i.naturalWidth, height: i.naturalHeight,
  section: i.closest('section.stage') ? i.closest('section.stage').id : null}));
const tables = Array.from(document.querySelectorAll('section.stage#result table')).map(t =>
  Array.from(t.querySelectorAll('tr'))
    .filter(r => r.querySelector('td'))
    .map(r => Array.from(r.querySelectorAll('td')).map(c => c.textContent.trim())));
const external = [];
for (const e of document.querySelectorAll('[src]'))
  if (!e.getAttribute('src').startsWith('data:')) external.push(e.tagName + ' src=' + e.getAttribute('src'));
for (const e of document.querySelectorAll('link[href]'))
  if (!e.getAttribute('href').startsWith('data:')) external.push('LINK href=' + e.getAttribute('href'));
for (const e of document.querySelectorAll('style'))
  if (/@import|url\(\s*['"]?(https?:|\/\/)/i.test(e.textContent)) external.push('STYLE imports or url()s');
const fetching = Array.from(document.scripts).map(s => s.textContent)
  .filter(t => /\bfetch\s*\(|XMLHttpRequest|WebSocket|EventSource|sendBeacon|importScripts|import\s*\(/.test(t)).length;
const resources = performance.getEntriesByType('resource').map(r => r.name)
  .filter(n => !n.startsWith('data:'));
return {stages, images, tables, external, fetching, resources,
        text: document.body ? document.body.innerText : '',
        height: Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0)};
"""

ALL_IMAGES_SETTLED = "return Array.from(document.images).every(i => i.complete);"


def explain(binary, weights, labels, photo, output):
    """Runs `maskrcnn explain`; returns (exit code, stdout, stderr)."""
    cmd = [binary, "explain", "--weights", weights, "--labels", labels, "--threads", "2",
           "--detections", "3", photo, "--output", output]
    print("running: " + " ".join(cmd), flush=True)
    start = time.time()
    try:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=400)
    except subprocess.TimeoutExpired:
        fail("explain did not finish within 400 s: " + " ".join(cmd))
    print("explain exited %d after %.1f s" % (done.returncode, time.time() - start), flush=True)
    return done.returncode, done.stdout, done.stderr


def is_number(text):
    """A time or share as a table shows it: 12.3, 1,234.5, 4 ms, 0.12 s, 8.1 %."""
    return re.fullmatch(r"[-+]?[\d,]*\.?\d+(?:e[-+]?\d+)?\s*(?:ms|s|%|\u00b5s|us)?", text) is not None


def check_page(driver, report):
    """Opens REPORT from file:// and checks what the page holds; returns its height."""
    driver.get(pathlib.Path(os.path.abspath(report)).as_uri())
    wait = WebDriverWait(driver, 120)
    wait.until(lambda d: d.execute_script("return document.readyState;") == "complete")
    wait.until(lambda d: d.execute_script(ALL_IMAGES_SETTLED))
    check(driver.title, "the report has no title")
    page = driver.execute_script(PAGE_FACTS)

    # The eight stages, each once, in the pipeline's order, each with a title.
    ids = [s["id"] for s in page["stages"]]
    for stage in STAGES:
        check(ids.count(stage) == 1, "section.stage#%s appears %d times; sections: %s" % (stage, ids.count(stage), ids))
    check([i for i in ids if i in STAGES] == STAGES, "stages out of order: %s" % ids)
    for s in page["stages"]:  # a title in words, not just the stage's number
        check(s["title"] and re.search(r"[A-Za-z]", s["title"]),
              "section #%s has no <h2>, or one without a title: %r" % (s["id"], s["title"]))
    by_id = {s["id"]: s for s in page["stages"]}
    for stage in WITH_PICTURES:
        check(by_id[stage]["images"] >= 1, "section #%s has no picture" % stage)

    # Every picture embedded and decoded.
    images = page["images"]
    check(images, "the report has no pictures")
    for n, img in enumerate(images):
        where = "picture %d (in #%s, src %s...)" % (n, img["section"], img["src"])
        check(img["src"].startswith("data:image/"), where + " is not a data: image")
        check(img["complete"] and img["width"] > 0 and img["height"] > 0, where + " did not decode: %s" % img)

    # Self-contained: nothing loaded from anywhere but the page itself.
    check(not page["external"], "the report refers to outside resources: %s" % page["external"][:5])
    check(page["fetching"] == 0, "%d of the report's scripts fetch things" % page["fetching"])
    check(not page["resources"], "the report loaded %s" % page["resources"][:5])

    # The stage times: a table in #result with at least 5 rows, each holding a number.
    timed = [t for t in page["tables"] if len(t) >= 5 and all(any(is_number(c) for c in row) for row in t)]
    check(timed, "no table of >= 5 timed rows in #result; its tables' rows: %s" % [len(t) for t in page["tables"]])

    bad = re.findall(r"(?<![\w-])-?(?:nan|NaN|inf|Infinity)(?![\w-])", page["text"])
    check(not bad, "the report shows %s" % sorted(set(bad)))

    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    check(not errors, "console errors: %s" % errors)
    return page["height"], len(images), len(timed[0])


def full_page_screenshot(driver, height, path):
    """The window as tall as the page (capped), then one screenshot of it."""
    height = min(max(height, 600), MAX_SCREENSHOT_HEIGHT)
    driver.set_window_size(WIDTH, height)
    inner = driver.execute_script("return window.innerHeight;")
    if inner < height:  # the window's frame takes some: grow it by that much
        driver.set_window_size(WIDTH, height + (height - inner))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(ALL_IMAGES_SETTLED))
    check(driver.save_screenshot(path), "could not save " + path)


def check_broken_photo(binary, weights, labels, tmp):
    """A text file as the photo: a one-line error naming it, and no report nor temporary left."""
    text = os.path.join(tmp, "not_a_photo.jpg")
    with open(text, "w") as f:
        f.write("this is a text file, not a JPEG\n" * 20)
    out_dir = os.path.join(tmp, "broken_output")
    os.makedirs(out_dir)
    output = os.path.join(out_dir, "report.html")
    rc, stdout, stderr = explain(binary, weights, labels, text, output)
    check(rc > 0, "explain on a text file exited %d (stderr %r)" % (rc, stderr))
    lines = stderr.strip().splitlines()
    check(len(lines) == 1, "explain on a text file wrote %d lines to stderr, not 1: %r" % (len(lines), stderr))
    check(text in lines[0] or os.path.basename(text) in lines[0],
          "the error does not name %s: %r" % (text, lines[0]))
    check(not os.path.exists(output), "explain on a text file left %s" % output)
    left = os.listdir(out_dir)
    check(not left, "explain on a text file left files in the output folder: %s" % left)
    return lines[0]


def main():
    if len(sys.argv) != 4:
        fail("usage: browser_report_test.py MASKRCNN_BIN PHOTO ARTIFACT_DIR")
    binary, photo, artifacts = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(artifacts, exist_ok=True)
    report = os.path.join(artifacts, "explain_report.html")
    screenshot = os.path.join(artifacts, "explain_report.png")
    for stale in (report, screenshot):
        if os.path.exists(stale):
            os.remove(stale)
    tmp = tempfile.mkdtemp(prefix="maskrcnn-explain-")
    driver = None
    try:
        weights, labels = os.path.join(tmp, "random_r18.pth"), os.path.join(tmp, "labels.txt")
        write_model(weights, photo)
        write_labels(labels)

        before = set(os.listdir(artifacts))
        rc, stdout, stderr = explain(binary, weights, labels, photo, report)
        with open(os.path.join(artifacts, "explain_report.log"), "w") as log:
            log.write("exit %d\n--- stdout\n%s--- stderr\n%s" % (rc, stdout, stderr))
        check(rc == 0, "explain exited %d: %s" % (rc, stderr.strip()))
        check(os.path.isfile(report), "explain exited 0 but wrote no " + report)
        size = os.path.getsize(report)
        check(0 < size < MAX_BYTES, "the report is %d bytes (limit %d)" % (size, MAX_BYTES))
        # Other tests write into ARTIFACT_DIR too: look only at what a temporary of
        # the report would be called ("<path>.tmp.<pid>", a dot file, ...).
        left = [n for n in set(os.listdir(artifacts)) - before - {"explain_report.html", "explain_report.log"}
                if "explain_report" in n or n.startswith(".") or "tmp" in n.lower()]
        check(not left, "explain left temporary files next to the report: %s" % sorted(left))

        driver = browser(WIDTH, 1000)
        height, pictures, timed_rows = check_page(driver, report)
        full_page_screenshot(driver, height, screenshot)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        check(not errors, "console errors: %s" % errors)
        driver.quit()
        driver = None

        error = check_broken_photo(binary, weights, labels, tmp)
        print("ok: report %.1f MB, %d pictures, %d timed stages, page %d px tall; screenshot %s; "
              "on a text file: %s" % (size / 1e6, pictures, timed_rows, height, screenshot, error))
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
