package engine

import "golang.org/x/time/rate"

// Limiter is e's shared bandwidth cap, for the tests.
func Limiter(e *Engine) *rate.Limiter { return e.limiter }
