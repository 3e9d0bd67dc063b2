// Checks a Grafana dashboard JSON against Grafana's own schema (@grafana/schema, the TypeScript types Grafana
// generates from its CUE dashboard and panel schemas), with the TypeScript compiler: the whole document must
// satisfy `Dashboard`, each panel's options and field config must satisfy its panel type's `Options` /
// `FieldConfig` (timeseries, stat), and object literals may carry no property the schema does not know.
// No Grafana server installs here (no Debian, PyPI or npm package ships one), so this is the check CI runs.
// Run by tests/tools/test_grafana_dashboard.py; exits non-zero and prints the compiler's errors on failure.
// Usage: node tests/tools/grafana-dashboard-check.mjs DASHBOARD.json... (one line OK or FAIL per file)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

const here = path.dirname(fileURLToPath(import.meta.url));
const files = process.argv.slice(2);
if (!files.length) {
  console.error('usage: grafana-dashboard-check.mjs DASHBOARD.json...');
  process.exit(2);
}
const PANEL_TYPES = {
  timeseries: 'TimeSeriesPanelCfg_types.gen',
  stat: 'StatPanelCfg_types.gen',
};
const HAS_FIELD_CONFIG = new Set(['timeseries']);
const dir = (type) => `@grafana/schema/dist/esm/raw/composable/${type}/panelcfg/x/${PANEL_TYPES[type]}`;
const HEADER = [
  "import type { Dashboard } from '@grafana/schema';",
  ...Object.keys(PANEL_TYPES).map((type) =>
    HAS_FIELD_CONFIG.has(type)
      ? `import type { Options as ${type}Options, FieldConfig as ${type}Field } from '${dir(type)}';`
      : `import type { Options as ${type}Options } from '${dir(type)}';`,
  ),
  // The schema's string enums (ThresholdsMode, MappingType, ...) are TypeScript enums, which a JSON string
  // cannot satisfy: Json<T> turns each into the union of its values ("absolute" | "percentage"), keeping every
  // other type, optional property and the excess-property check as they are.
  'type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T'
    + ' : T extends readonly (infer U)[] ? Json<U>[] : T extends object ? { [K in keyof T]: Json<T[K]> } : T;',
];

/** The TypeScript module that type-checks one dashboard, and the problems found before compiling. */
function module(file) {
  const dashboard = JSON.parse(readFileSync(file, 'utf8'));
  const lines = [...HEADER, `export const dashboard = (${JSON.stringify(dashboard, null, 1)}) satisfies Json<Dashboard>;`];
  const panels = (dashboard.panels ?? []).flatMap((p) => (p.type === 'row' ? [p, ...(p.panels ?? [])] : [p]));
  const problems = [];
  panels.forEach((panel, i) => {
    if (panel.type === 'row') return;
    if (!(panel.type in PANEL_TYPES)) {
      problems.push(`panel ${JSON.stringify(panel.title)}: type ${panel.type} has no schema checked here`);
      return;
    }
    lines.push(`export const options${i} = (${JSON.stringify(panel.options ?? {})}) satisfies Json<${panel.type}Options>;`);
    const custom = panel.fieldConfig?.defaults?.custom;
    if (custom !== undefined && HAS_FIELD_CONFIG.has(panel.type)) {
      lines.push(`export const custom${i} = (${JSON.stringify(custom)}) satisfies Json<${panel.type}Field>;`);
    }
  });
  return { text: lines.join('\n') + '\n', problems, count: panels.filter((p) => p.type !== 'row').length };
}

// One compiler run for every file given (it costs seconds); inside node_modules, so that '@grafana/schema'
// resolves from tests/tools/node_modules.
const work = mkdtempSync(path.join(here, 'node_modules', '.dashboard-check-'));
let failed = 0;
try {
  const modules = files.map((file, i) => {
    const built = module(file);
    const source = path.join(work, `dashboard${i}.ts`);
    writeFileSync(source, built.text);
    return { file, source, ...built };
  });
  const program = ts.createProgram(modules.map((m) => m.source), {
    noEmit: true,
    strict: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
  });
  const global = [...program.getGlobalDiagnostics(), ...program.getOptionsDiagnostics()];
  for (const d of global) console.error(`FAIL ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`);
  failed += global.length ? files.length : 0;
  for (const m of global.length ? [] : modules) {
    const sourceFile = program.getSourceFile(m.source);
    const diagnostics = [...program.getSyntacticDiagnostics(sourceFile), ...program.getSemanticDiagnostics(sourceFile)];
    const messages = [...m.problems];
    for (const d of diagnostics) {
      const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : null;
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
      const near = where ? d.file.text.split('\n')[where.line].slice(Math.max(0, where.character - 80), where.character + 80) : '';
      messages.push(`${text}${near ? `\n    near: ${near}` : ''}`);
    }
    if (messages.length) {
      failed += 1;
      for (const message of messages) console.error(`FAIL ${m.file}: ${message}`);
    } else {
      console.log(`OK ${m.file}: dashboard and ${m.count} panels satisfy @grafana/schema`);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
