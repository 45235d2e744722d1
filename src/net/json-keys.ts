/**
 * Keys given twice in one object of a JSON text. JSON.parse keeps the last
 * silently, so a config that names a volume twice would serve only one of
 * the two, with no word of the other (its path, or its writable flag).
 */

/** A key given again in the same object: `where` is the dotted path of its object ('' at the top). */
export interface RepeatedKey {
  where: string;
  key: string;
}

/** Every repeated key, in order of appearance; the text must be valid JSON. */
export function repeatedKeys(text: string): RepeatedKey[] {
  const found: RepeatedKey[] = [];
  // One frame per open object (its keys so far, and its own key) or array (keys null).
  const frames: { keys: Set<string> | null; name: string }[] = [];
  let lastString = '';
  let i = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const end = stringEnd(text, i);
      lastString = JSON.parse(text.slice(i, end)) as string;
      i = end;
      continue;
    }
    if (c === 0x3a /* : */) {
      const top = frames.at(-1);
      if (top?.keys) {
        if (top.keys.has(lastString)) found.push({ where: frames.slice(1).map((f) => f.name).join('.'), key: lastString });
        top.keys.add(lastString);
      }
      i++;
      continue;
    }
    // A value that is an object or array is named by the key just read (in an object) or its index's absence.
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const parent = frames.at(-1);
      frames.push({ keys: c === 0x7b ? new Set() : null, name: parent?.keys ? lastString : '[]' });
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) frames.pop();
    i++;
  }
  return found;
}

function stringEnd(text: string, start: number): number {
  let i = start + 1;
  while (i < text.length && text.charCodeAt(i) !== 0x22) i += text.charCodeAt(i) === 0x5c /* \ */ ? 2 : 1;
  return i + 1;
}
