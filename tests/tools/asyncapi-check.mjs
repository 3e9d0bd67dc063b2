// Reads the gateway's published contracts with tools the project did not write, as a partner would:
//  1. contracts/asyncapi.json with the official AsyncAPI parser (@asyncapi/parser 3.x): any error or warning
//     fails, so a payload schema the parser could not check (unknown schemaFormat) fails too;
//  2. every contracts/schemas/*.json with Ajv's draft 2020-12 validator in strict mode, formats asserted
//     (ajv-formats), regular expressions as ECMA-262 (JavaScript), not Python's re;
//  3. every contracts/examples/*.json against the dossier-event schema: each must be valid;
//  4. with --cases FILE ({"schema": name, "cases": {name: message}}), each case against that schema: the
//     verdicts are printed as one JSON object {name: true|false} on the last line of stdout.
// Run by tests/integration/test_contract_tools.py; exits non-zero on any failure.
// Usage: node tests/tools/asyncapi-check.mjs [--contracts DIR] [--cases FILE]
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const contracts = path.resolve(option('--contracts', path.join(here, '..', '..', 'contracts')));
const casesFile = option('--cases', null);
let failures = 0;
const fail = (message) => {
  failures += 1;
  console.error(`FAIL ${message}`);
};
const readJson = async (file) => JSON.parse(await readFile(file, 'utf8'));

// 1. AsyncAPI
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path.join(contracts, 'asyncapi.json')).parse();
for (const d of diagnostics) {
  const line = `asyncapi.json ${DiagnosticSeverity[d.severity]} ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`;
  if (d.severity <= DiagnosticSeverity.Warning) fail(line);
  else console.error(`note ${line}`);
}
if (!document) {
  fail('asyncapi.json: the AsyncAPI parser produced no document');
} else {
  const messages = document.allMessages().all().map((m) => m.id());
  if (messages.length === 0) fail('asyncapi.json: no message');
  for (const message of document.allMessages().all()) {
    if (!message.hasPayload()) fail(`asyncapi.json: message ${message.id()} has no payload`);
  }
  console.error(`ok asyncapi.json ${document.version()}: ${document.channels().length} channels, messages ${messages.join(', ')}`);
}

// 2. Schemas, draft 2020-12, strict
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const schemaDir = path.join(contracts, 'schemas');
const validators = {};
for (const name of (await readdir(schemaDir)).filter((f) => f.endsWith('.json')).sort()) {
  try {
    const schema = await readJson(path.join(schemaDir, name));
    validators[name] = ajv.compile(schema);
    console.error(`ok schemas/${name} compiles (draft 2020-12, strict)`);
  } catch (error) {
    fail(`schemas/${name}: ${error.message}`);
  }
}

// 3. Examples
const eventSchema = validators['dossier-event.v1.json'];
const exampleDir = path.join(contracts, 'examples');
const examples = (await readdir(exampleDir)).filter((f) => f.endsWith('.json')).sort();
if (examples.length === 0) fail('no example in contracts/examples');
if (!eventSchema) fail('examples: schemas/dossier-event.v1.json did not compile');
for (const name of eventSchema ? examples : []) {
  const message = await readJson(path.join(exampleDir, name));
  if (eventSchema(message)) console.error(`ok examples/${name}`);
  else fail(`examples/${name}: ${ajv.errorsText(eventSchema.errors)}`);
}

// 4. Cases
if (casesFile) {
  const { schema, cases } = await readJson(casesFile);
  const validate = validators[schema];
  if (!validate) fail(`--cases: unknown schema ${schema}`);
  const verdicts = {};
  for (const [name, message] of Object.entries(cases)) verdicts[name] = validate ? validate(message) : null;
  console.log(JSON.stringify(verdicts));
}

if (failures) {
  console.error(`${failures} failure(s)`);
  process.exit(1);
}
console.error('all contract files read by the official tools');
