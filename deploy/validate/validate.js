// Validates Kubernetes objects offline: each against the OpenAPI schema of
// its kind (the npm package kubernetes-models, which carries the schemas
// compiled into ajv validators), and for fields no schema defines.
//
// The compiled validators do not reject unknown fields (the schemas allow
// them), so every object is wrapped in a Proxy that records which of its
// keys the validator reads: it reads every property its schema defines,
// and enumerates the keys of free-form maps (labels, resources, ...). A key
// never read is one the schema does not know: a typo that the API server
// would drop or refuse.
//
// Usage: node validate.js < objects.json   (a JSON array of objects)
// Prints one line per problem; exits 1 if there are any.
"use strict";

const fs = require("fs");
const path = require("path");

const schemas = path.join(__dirname, "node_modules", "kubernetes-models", "_schemas");

// "apps/v1" + "StatefulSet" -> IoK8sApiAppsV1StatefulSet (core: IoK8sApiCoreV1...).
function schemaName(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const groupName = group.replace(/\.k8s\.io$/, "").split(".").map(
      (part) => part.charAt(0).toUpperCase() + part.slice(1)).join("");
  return `IoK8sApi${groupName}${version.charAt(0).toUpperCase()}${version.slice(1)}${kind}`;
}

// `value` with every object and array behind a Proxy; `nodes` receives each
// object's path, keys and the set of keys read.
function track(value, where, nodes) {
  if (value === null || typeof value !== "object") return value;
  const read = new Set();
  const inner = Array.isArray(value)
    ? value.map((item, i) => track(item, `${where}[${i}]`, nodes))
    : Object.fromEntries(Object.entries(value).map(
        ([key, item]) => [key, track(item, `${where}.${key}`, nodes)]));
  if (!Array.isArray(value)) nodes.push({ where, keys: Object.keys(value), read });
  const mark = (key) => { if (typeof key === "string") read.add(key); };
  return new Proxy(inner, {
    get(target, key, receiver) { mark(key); return Reflect.get(target, key, receiver); },
    has(target, key) { mark(key); return Reflect.has(target, key); },
    ownKeys(target) { Reflect.ownKeys(target).forEach(mark); return Reflect.ownKeys(target); },
  });
}

function problems(object) {
  const name = `${object.kind}/${(object.metadata || {}).name}`;
  const file = path.join(schemas, `${schemaName(object.apiVersion || "", object.kind || "")}.js`);
  if (!fs.existsSync(file)) return [`${name}: no schema for ${object.apiVersion} ${object.kind}`];
  const { validate } = require(file);
  const nodes = [];
  const found = [];
  if (!validate(track(object, "", nodes))) {
    for (const error of validate.errors) {
      found.push(`${name}: ${error.instancePath || "/"} ${error.message || error.keyword} ` +
                 JSON.stringify(error.params));
    }
  }
  for (const node of nodes) {
    for (const key of node.keys.filter((k) => !node.read.has(k))) {
      found.push(`${name}: unknown field ${node.where}.${key}`);
    }
  }
  return found;
}

const objects = JSON.parse(fs.readFileSync(0, "utf8"));
const all = objects.flatMap(problems);
for (const line of all) console.log(line);
console.error(`validate.js: ${objects.length} objects, ${all.length} problems`);
process.exit(all.length === 0 ? 0 : 1);
