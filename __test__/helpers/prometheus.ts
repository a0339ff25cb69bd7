// Parses Prometheus text with the official Python client's parser (PyPI prometheus-client, which
// `node scripts/setup.mjs` installs into .tools/python), so the tests check the format with the
// parser Prometheus' own project maintains, not one written here.
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'

const toolsDir = join(__dirname, '..', '..', '.tools', 'python')

const SCRIPT = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": family.name,
        "type": family.type,
        "documentation": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    })
print(json.dumps(families))
`

export interface ParsedSample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface ParsedFamily {
  /** As the parser names it: a counter's name without `_total`. */
  name: string
  type: string
  documentation: string
  samples: ParsedSample[]
}

/** Parses `text`; throws when the parser rejects it. */
export function parsePrometheus(text: string): ParsedFamily[] {
  if (!existsSync(join(toolsDir, 'prometheus_client'))) {
    throw new Error(`prometheus-client not found in ${toolsDir}: run \`node scripts/setup.mjs\``)
  }
  const out = execFileSync(process.env.PYTHON ?? 'python3', ['-c', SCRIPT], {
    input: text,
    env: { ...process.env, PYTHONPATH: toolsDir },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  return JSON.parse(out.toString())
}

/** The value of the sample `name` whose labels include `labels`; throws when there is none. */
export function sampleValue(families: ParsedFamily[], name: string, labels: Record<string, string> = {}): number {
  for (const family of families) {
    for (const sample of family.samples) {
      if (sample.name === name && Object.entries(labels).every(([k, v]) => sample.labels[k] === v)) return sample.value
    }
  }
  throw new Error(`no sample ${name} ${JSON.stringify(labels)}`)
}
