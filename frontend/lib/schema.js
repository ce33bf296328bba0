// What the API says its states mean: the descriptions of its enums, read from the schema once
// (introspection), so the console explains a state in the API's own words and learns of a new
// one without a change here.

import { gql } from './api.js';

const ENUMS = ['DeploymentState', 'StepState', 'NodeStatus', 'DeploymentAction', 'Access', 'TagMode', 'Role', 'WebhookEvent', 'Forge', 'PreviewTagRule', 'PreviewState'];
const known = new Map();

export async function loadEnums() {
  if (known.size) return;
  const query = `{ ${ENUMS.map((e) => `${e}: __type(name: "${e}") { enumValues { name description } }`).join(' ')} }`;
  const data = await gql(query);
  for (const name of ENUMS) {
    known.set(name, new Map((data[name]?.enumValues ?? []).map((v) => [v.name, v.description ?? ''])));
  }
}

// The values of enum `name`, in the schema's order.
export function values(name) {
  return [...(known.get(name)?.keys() ?? [])];
}

// What value `value` of enum `name` means, in the API's words ('' when it says nothing).
export function describe(name, value) {
  return known.get(name)?.get(value) ?? '';
}
