#!/usr/bin/env node
// Compile ledger/contracts/*.sol (and test/*.sol) with the pinned npm solc; write build/<Name>.json
// ({contractName, abi, bytecode, deployedBytecode, compiler}). `--check` compiles in memory and exits 1
// when the committed artifacts differ. Imports resolve from node_modules (OpenZeppelin).
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = __dirname;
const BUILD = path.join(ROOT, "build");
const NODE_MODULES = path.resolve(ROOT, "..", "..", "node_modules");
const SOURCES = [
  "OpenToken.sol", "DatanetRegistry.sol", "ModelRegistry.sol", "RewardDistributor.sol", "Governance.sol",
  "OpenGovernor.sol", "ProtocolParameters.sol",
  "test/ReentrantToken.sol",
];

function findImport(p) {
  for (const base of [ROOT, NODE_MODULES]) {
    const full = path.join(base, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  }
  return { error: "not found: " + p };
}

function compile() {
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(SOURCES.map((s) => [s, { content: fs.readFileSync(path.join(ROOT, s), "utf8") }])),
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      metadata: { bytecodeHash: "none" },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
    },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage);
    process.exit(2);
  }
  const artifacts = {};
  for (const src of SOURCES) {
    for (const [name, c] of Object.entries(out.contracts[src] || {})) {
      if (!c.evm.bytecode.object) continue; // interfaces have no code
      artifacts[name] = {
        contractName: name,
        source: src,
        compiler: solc.version(),
        abi: c.abi,
        bytecode: "0x" + c.evm.bytecode.object,
        deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      };
    }
  }
  return artifacts;
}

const artifacts = compile();
const check = process.argv.includes("--check");
let differ = 0;
for (const [name, art] of Object.entries(artifacts)) {
  const file = path.join(BUILD, name + ".json");
  const text = JSON.stringify(art, null, 1) + "\n";
  if (check) {
    const old = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "";
    if (old !== text) { console.error("differs: " + file); differ += 1; }
  } else {
    fs.mkdirSync(BUILD, { recursive: true });
    fs.writeFileSync(file, text);
    console.log("wrote " + path.relative(process.cwd(), file));
  }
}
if (check) {
  if (differ) process.exit(1);
  console.log("build/ matches the sources (" + Object.keys(artifacts).length + " contracts, solc " + solc.version() + ")");
}
