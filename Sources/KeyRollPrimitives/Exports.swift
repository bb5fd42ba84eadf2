// The backoff formula lives in a module that imports nothing (the lean agent's supervisor links it
// without Foundation); everything that imports KeyRollPrimitives sees it as before.
@_exported import KeyRollBackoff
