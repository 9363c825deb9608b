// Deep freeze for configuration values handed to other layers: plain objects, arrays and
// the values inside Maps. Maps themselves are frozen as objects only (their entries stay
// technically mutable); their types are ReadonlyMap so the compiler guards them.

export function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value;
  if (value instanceof Map) {
    for (const v of value.values()) deepFreeze(v);
  } else {
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return Object.freeze(value);
}
