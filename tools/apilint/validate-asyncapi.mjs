// Validates an AsyncAPI document with the reference parser (@asyncapi/parser,
// which also applies its built-in Spectral rules). Prints every diagnostic;
// exits 1 when the document does not parse or has an error or a warning.
// Usage: node validate-asyncapi.mjs FILE
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate-asyncapi.mjs FILE');
  process.exit(2);
}
const severities = ['error', 'warning', 'info', 'hint'];
const { document, diagnostics } = await new Parser().parse(readFileSync(file, 'utf8'), { source: file });
let failed = !document;
for (const d of diagnostics) {
  const severity = severities[d.severity] ?? String(d.severity);
  if (d.severity <= 1) failed = true;
  console.log(`${severity} ${d.code} at ${d.path.join('.') || '(root)'}: ${d.message}`);
}
console.log(document ? `${file}: AsyncAPI ${document.version()}, ${failed ? 'FAILED' : 'valid'}` : `${file}: does not parse`);
process.exit(failed ? 1 : 0);
