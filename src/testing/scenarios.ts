/** The workload scenarios' names: apart from workload.ts so `resync demo` can list them without loading the generator. */
export type Scenario = 'identical' | 'scattered' | 'shifted' | 'mixed' | 'different';

export const SCENARIOS: readonly Scenario[] = Object.freeze([
  'identical',
  'scattered',
  'shifted',
  'mixed',
  'different',
] as const);
