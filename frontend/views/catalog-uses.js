// Deleting a service or plugin: while a project's latest pipeline or a repository link uses it,
// say so and name every one (with a link to fix it), offering no button that must fail;
// otherwise ask, then delete.

import { gql } from '../lib/api.js';
import { notify } from '../lib/dom.js';
import { blockedDialog, confirmThen } from '../lib/dialog.js';

const WHERE = {
  PIPELINE: (project) => `#/projects/${encodeURIComponent(project)}/pipeline`,
  REPOSITORY_LINK: (project) => `#/projects/${encodeURIComponent(project)}`,
};

// `kind` is 'service' or 'plugin' (its query and delete mutation are named after it).
export async function deleteUnlessUsed({ kind, name, message, status, reload }) {
  const Kind = kind[0].toUpperCase() + kind.slice(1);
  const { [kind]: entry } = await gql(`query($n: String!) { ${kind}(name: $n) { usedBy { project kind description } } }`, { n: name });
  if (entry.usedBy.length) {
    blockedDialog({
      title: `${Kind} ${name} cannot be deleted yet`,
      intro: `It is in use. Change ${entry.usedBy.length === 1 ? 'this' : `these ${entry.usedBy.length}`} first, then delete it:`,
      items: entry.usedBy.map((u) => [u.description, WHERE[u.kind](u.project)]),
    });
    return;
  }
  await confirmThen({ title: `Delete ${kind} ${name}?`, message, action: `Delete ${name}` }, status, async () => {
    await gql(`mutation($n: String!) { delete${Kind}(name: $n) }`, { n: name });
    notify(`${Kind} ${name} deleted.`);
    await reload();
  });
}
