"""Results a CI system reads: JUnit XML (one test case per job and kernel) and JSON.

JUnit is what GitHub Actions' and GitLab's test reports, Jenkins and most dashboards
show; a case fails with the verdict line as its message and carries the job's LKML
table as system-out, so the failure reads the same as on a terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class Case:
    name: str              # e.g. "collapse-1G[patched]"
    ok: Optional[bool]     # None: not judged (no data, undetermined)
    message: str           # the verdict line
    output: str = ""       # the job's report, for system-out
    seconds: float = 0.0


def junit_xml(suite: str, cases: List[Case]) -> str:
    failures = sum(1 for c in cases if c.ok is False)
    skipped = sum(1 for c in cases if c.ok is None)
    root = ET.Element("testsuite", name=suite, tests=str(len(cases)), failures=str(failures), errors="0",
                      skipped=str(skipped), time=f"{sum(c.seconds for c in cases):.1f}",
                      timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      hostname=socket.gethostname())
    for c in cases:
        tc = ET.SubElement(root, "testcase", classname=suite, name=c.name, time=f"{c.seconds:.1f}")
        if c.ok is False:
            ET.SubElement(tc, "failure", message=c.message, type="model mismatch").text = c.message
        elif c.ok is None:
            ET.SubElement(tc, "skipped", message=c.message)
        if c.output:
            ET.SubElement(tc, "system-out").text = c.output
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_results(junit: Optional[Path], json_path: Optional[Path], suite: str, cases: List[Case],
                  data: Dict[str, Any]) -> None:
    """Write what was asked for (either may be None)."""
    if junit:
        junit.write_text(junit_xml(suite, cases))
    if json_path:
        json_path.write_text(json.dumps(data, indent=1, default=str) + "\n")
