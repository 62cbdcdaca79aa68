// node operator-schema.mjs NODE_MODULES < resources.json
//
// Validates Prometheus Operator custom resources (a JSON array of them, on
// stdin) against the operator's CRD schemas as the npm package
// @kubernetes-models/prometheus-operator carries them (JSON schemas made
// from the published CRDs, checked with ajv). Prints one line per resource;
// exits 1 when any is invalid or of a kind it has no schema for.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const v1 = await import(
  pathToFileURL(
    join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js"),
  ).href
);
let failed = 0;
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const name = `${doc.kind}/${doc.metadata?.name}`;
  const Kind = doc.apiVersion === "monitoring.coreos.com/v1" ? v1[doc.kind] : undefined;
  if (typeof Kind !== "function") {
    console.log(`${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    failed++;
    continue;
  }
  try {
    new Kind(doc).validate();
    console.log(`${name}: valid`);
  } catch (e) {
    console.log(`${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
