#!/usr/bin/env python3
"""Parse an OpenMetrics exposition (stdin) with prometheus_client's strict
parser and print its samples as JSON: [{"name", "labels", "value"}].
A malformed exposition raises (exit status 1, the error on stderr)."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type})
json.dump(samples, sys.stdout)
