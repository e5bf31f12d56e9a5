#!/usr/bin/python3
"""The page of `maskrcnn serve` in a real browser (headless Chromium driven by
Selenium): load /, upload a photo, wait for the overlay, check the detection
list against the server's own /v1/predict answer, move the score slider and
toggle a class, hover a row, and find no console errors. Saves a screenshot.
Then "Explain the stages" opens the explain report of the photo in a new tab.

usage: browser_page_test.py MASKRCNN_BIN PHOTO ARTIFACT_DIR

The model is torchvision's Mask R-CNN (ResNet-18-FPN, 4 classes) with seeded
random weights, its class head set so that the photo's detections mix the
classes and spread their scores, saved as a .pth that `maskrcnn serve` reads
like any torchvision checkpoint (tests/support/browser_util.py).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "support"))
from browser_util import browser, check, fail, write_labels, write_model  # noqa: E402


def rle_area(counts):
    """Foreground pixels of a COCO compressed RLE string (pycocotools' rleFrString)."""
    runs, p = [], 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return sum(runs[1::2])


class Server:
    def __init__(self, binary, weights, labels, log):
        self.proc = subprocess.Popen(
            [binary, "serve", "--weights", weights, "--labels", labels, "--port", "0", "--threads", "2",
             "--score-thresh", "0.05"], stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.proc.stdout.readline().strip()
        check(line.startswith("serving on http://"), "serve printed %r, not its URL" % line)
        self.url = line[len("serving on "):]

    def wait_ready(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.2)
        fail("the server was not ready within %d s" % seconds)

    def predict(self, photo):
        data = open(photo, "rb").read()
        req = urllib.request.Request(self.url + "/v1/predict", data=data, method="POST",
                                     headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -1


def shown_rows(driver):
    """The detection list as (name, score text, meta text) rows."""
    return [(li.find_element(By.CLASS_NAME, "name").text, li.find_element(By.CLASS_NAME, "score").text,
             li.find_element(By.CLASS_NAME, "meta").text)
            for li in driver.find_elements(By.CSS_SELECTOR, "#detections .detection")]


def expected_rows(detections, threshold, hidden=()):
    return [(d["category_name"], "%.3f" % d["score"]) for d in detections
            if d["score"] >= threshold and d["category_id"] not in hidden]


def set_slider(driver, value):
    driver.execute_script(
        "const s = document.getElementById('score-slider'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true})); return s.value;", str(value))


def main():
    binary, photo, artifacts = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(artifacts, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="maskrcnn-browser-")
    weights, labels = os.path.join(tmp, "random_r18.pth"), os.path.join(tmp, "labels.txt")
    write_model(weights, photo)
    write_labels(labels)
    log = open(os.path.join(artifacts, "serve_page_server.log"), "w")
    server = Server(binary, weights, labels, log)
    driver = None
    try:
        server.wait_ready(120)
        reference = server.predict(photo)["images"][0]
        dets = reference["detections"]
        check(len(dets) >= 3, "the reference answer has only %d detections" % len(dets))

        driver = browser()
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 120)
        status = lambda: driver.find_element(By.ID, "status").get_attribute("data-state")
        wait.until(lambda d: status() == "ready")
        check(driver.title, "the page has no title")
        driver.find_element(By.ID, "file-input").send_keys(os.path.abspath(photo))
        wait.until(lambda d: status() in ("done", "error"))
        check(status() == "done", "upload failed: " + driver.find_element(By.ID, "status").text)

        # The overlay: the canvas holds the photo at its own size, with coloured masks on it.
        w, h = driver.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        check((w, h) == (reference["width"], reference["height"]),
              "canvas %dx%d, photo %dx%d" % (w, h, reference["width"], reference["height"]))

        # At the slider's first value (0.5): the detections at or above it, in the server's order.
        rows = shown_rows(driver)
        check([r[:2] for r in rows] == expected_rows(dets, 0.5),
              "list at 0.5: %s\nexpected %s" % (rows, expected_rows(dets, 0.5)))
        # Masks decoded in the page: each row's mask area equals the RLE's.
        for row, d in zip(rows, [d for d in dets if d["score"] >= 0.5]):
            area = rle_area(d["segmentation"]["counts"])
            check(("%d px mask" % area) in row[2], "row %s, RLE area %d" % (row, area))

        # Slider to 0: every detection; then up to a threshold that drops some.
        set_slider(driver, 0)
        everything = shown_rows(driver)
        check([r[:2] for r in everything] == expected_rows(dets, 0.0),
              "list at 0: %d rows, %d detections" % (len(everything), len(dets)))
        scores = sorted(d["score"] for d in dets)
        threshold = round(scores[len(scores) // 2], 2)
        if not 0 < sum(s >= threshold for s in scores) < len(scores):
            threshold = round(scores[-1], 2)
        set_slider(driver, threshold)
        fewer = shown_rows(driver)
        check(len(fewer) < len(everything), "the slider at %.2f did not shrink the list" % threshold)
        check([r[:2] for r in fewer] == expected_rows(dets, threshold),
              "list at %.2f: %s" % (threshold, fewer))

        # A class toggle hides that class without a new request.
        set_slider(driver, 0)
        chip = driver.find_element(By.CSS_SELECTOR, "#class-toggles .chip")
        hidden = int(chip.get_attribute("data-category"))
        chip.click()
        remaining = shown_rows(driver)
        check([r[:2] for r in remaining] == expected_rows(dets, 0.0, {hidden}) and 0 < len(remaining) < len(dets),
              "toggling class %d did not hide just it: %d of %d rows" % (hidden, len(remaining), len(dets)))
        chip = driver.find_element(By.CSS_SELECTOR, "#class-toggles .chip[data-category='%d']" % hidden)
        chip.click()
        set_slider(driver, 0.5)

        # Hover a row: it and its detection are highlighted.
        first = driver.find_element(By.CSS_SELECTOR, "#detections .detection")
        ActionChains(driver).move_to_element(first).perform()
        check("active" in first.get_attribute("class"), "hovering a row did not highlight it")
        timing = driver.find_element(By.ID, "timing").text
        check("Inference" in timing, "no server timing shown: %r" % timing)

        driver.save_screenshot(os.path.join(artifacts, "serve_page.png"))
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        check(not errors, "console errors: %s" % errors)

        # "Explain the stages": the report of this photo opens in a new tab.
        page = driver.current_window_handle
        driver.find_element(By.ID, "explain").click()
        wait.until(lambda d: len(d.window_handles) == 2)
        driver.switch_to.window([h for h in driver.window_handles if h != page][0])
        sections = lambda: driver.execute_script(
            "return Array.from(document.querySelectorAll('section.stage')).map(s => s.id);")
        wait.until(lambda d: len(sections()) == 8)
        check(sections() == ["transform", "backbone", "anchors", "rpn", "box-head", "roi-align", "mask-head",
                             "result"], "explain report sections: %s" % sections())
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"))
        header = driver.find_element(By.CSS_SELECTOR, "header p").text
        check(("%d detections" % len(dets)) in header, "explain header %r, %d detections" % (header, len(dets)))
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        check(not errors, "console errors in the explain tab: %s" % errors)
        driver.close()
        driver.switch_to.window(page)
        wait.until(lambda d: status() == "done")
        print("ok: %d detections, %d at 0.5, %d at %.2f; explain tab with 8 sections; screenshot %s" %
              (len(dets), len(rows), len(fewer), threshold, os.path.join(artifacts, "serve_page.png")))
    finally:
        if driver is not None:
            driver.quit()
        rc = server.stop()
    check(rc == 0, "serve exited %d after SIGTERM" % rc)


if __name__ == "__main__":
    main()
