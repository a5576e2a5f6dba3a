"""Runs one shard of the unit tests and writes a JUnit XML report (no third-party packages needed)."""
import sys
import time
import unittest
import xml.etree.ElementTree as ET

shard, shards, report = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
suite = unittest.defaultTestLoader.discover("tests", top_level_dir=".")


def flatten(s):
    for item in s:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


tests = sorted(flatten(suite), key=lambda t: t.id())
mine = [t for i, t in enumerate(tests) if i % shards == shard - 1]
root = ET.Element("testsuite", name=f"shop-shard-{shard}", tests=str(len(mine)))
failures = 0
for test in mine:
    result = unittest.TestResult()
    started = time.perf_counter()
    test.run(result)
    case = ET.SubElement(root, "testcase", classname=test.id().rsplit(".", 1)[0], name=test.id().rsplit(".", 1)[1],
                         time=f"{time.perf_counter() - started:.4f}")
    for _, trace in result.failures + result.errors:
        failures += 1
        ET.SubElement(case, "failure", message=trace.strip().splitlines()[-1]).text = trace
    print(("FAIL " if result.failures or result.errors else "ok   ") + test.id())
root.set("failures", str(failures))
ET.ElementTree(root).write(report, encoding="utf-8", xml_declaration=True)
sys.exit(1 if failures else 0)
