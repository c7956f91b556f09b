package engine

import (
	"time"

	"golang.org/x/time/rate"
)

// Limiter is e's shared bandwidth cap, for the tests.
func Limiter(e *Engine) *rate.Limiter { return e.limiter }

// SetNow gives e a clock the test moves; before Run.
func SetNow(e *Engine, now func() time.Time) { e.now = now }
