"""What the headless-Chromium tests share (serve/browser_page_test.py,
explain/browser_report_test.py): failing with a message, the small seeded
model they run `maskrcnn` with, and the browser.

The model is torchvision's Mask R-CNN (ResNet-18-FPN, 4 classes) with seeded
random weights, its class head set so that a photo's detections mix the
classes and spread their scores, saved as a .pth that `maskrcnn` reads like
any torchvision checkpoint. Its class names go in a --labels file.

A script imports it with its folder put first on sys.path:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "support"))
"""
import sys

import torch
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from torchvision.io import read_image
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

CLASSES = ["__background__", "circle", "square", "triangle"]


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def write_model(path, photo):
    """Random weights whose class scores mix the three classes on PHOTO, some
    above the serve page slider's first value (0.5), most below: the class
    head's rows lose their component along the box features every RoI shares,
    which would otherwise hand all 100 detections to one class."""
    torch.manual_seed(3)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = MaskRCNN(backbone, num_classes=len(CLASSES), min_size=800, max_size=1333).eval()  # maskrcnn's defaults
    features = []
    hook = model.roi_heads.box_head.register_forward_hook(lambda module, args, out: features.append(out))
    with torch.no_grad():
        model([read_image(photo).float() / 255])
        hook.remove()
        shared = features[0].mean(0)
        shared /= shared.norm()
        weight = model.roi_heads.box_predictor.cls_score.weight
        weight.normal_(0, 0.05)
        weight -= torch.outer(weight @ shared, shared)
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 1.0, 1.0, 1.0]))
    torch.save(model.state_dict(), path)


def write_labels(path):
    """CLASSES, one a line: the --labels file for the model of write_model."""
    with open(path, "w") as f:
        f.write("\n".join(CLASSES) + "\n")


def browser(width=1400, height=1000):
    """Headless Chromium through chromium-driver, its console kept (get_log("browser"))."""
    options = Options()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=%d,%d" % (width, height), "--no-first-run", "--disable-extensions"]:
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
