#!/usr/bin/env node
// The native `solc` that forge expects, made from the pinned npm solc (soljson): there is no network here to
// download a native binary, and compile.js builds the deployed artifacts with this same compiler. forge calls
// `solc --version` and `solc [--base-path P] [--include-path P] [--allow-paths P] --standard-json` with every
// source inlined in the JSON on stdin, so the path options are accepted and ignored. Imports that are not
// inlined resolve from the base and include paths, as native solc would; a missing one is a compile error.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require(path.resolve(__dirname, "..", "..", "..", "node_modules", "solc"));

const args = process.argv.slice(2);
if (args.includes("--version")) {
  process.stdout.write("solc, the solidity compiler commandline interface\nVersion: " + solc.version() + "\n");
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  process.stderr.write("solc.js: only --version and --standard-json are supported\n");
  process.exit(2);
}
const roots = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--base-path" || args[i] === "--include-path") roots.push(args[++i]);
}
function findImport(p) {
  for (const base of roots.length ? roots : [process.cwd()]) {
    const full = path.resolve(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: "not found: " + p };
}
const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImport }));
