"""JUnit XML for CI: one test case per gated metric, failures naming the metric and the values."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path


def write_junit(path: str | os.PathLike, suite: str, checks: list[dict], seconds: float = 0.0) -> Path:
    """Write `checks` ({"name", "passed", "message"}) as a JUnit testsuite; temp file + os.replace."""
    path = Path(path)
    failures = [c for c in checks if not c["passed"]]
    root = ET.Element("testsuites", name=suite, tests=str(len(checks)), failures=str(len(failures)))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(checks)), failures=str(len(failures)),
                       errors="0", time=f"{seconds:.1f}")
    for c in checks:
        case = ET.SubElement(ts, "testcase", classname=suite, name=c["name"])
        if c["passed"]:
            ET.SubElement(case, "system-out").text = c["message"]
        else:
            ET.SubElement(case, "failure", message=c["message"], type="DriftGateFailure").text = c["message"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
    return path
