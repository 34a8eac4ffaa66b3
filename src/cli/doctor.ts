export async function runDoctor(_argv: string[]): Promise<number> { return 2; }
