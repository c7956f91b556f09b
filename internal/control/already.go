package control

import (
	"net/http"
)

// answerAlreadyOn answers a migrate of a file already on the tier, with
// no move queued for it, itself: nothing to queue, nothing to count. A
// file that gets there while queued is the engine's to tell (Job.Already).
func (s *Server) answerAlreadyOn(w http.ResponseWriter, r *http.Request, rel, tier string, size int64) bool {
	ents, err := s.store.List(rel, false)
	if err != nil || len(ents) != 1 || ents[0].Path != rel || ents[0].Tier != tier {
		return false
	}
	st := s.policy.Status()
	for _, q := range append(st.Queued, st.InFlight...) {
		if q.Path == rel {
			return false
		}
	}
	p, _ := s.caller(r)
	s.log.Info().Str("path", rel).Str("to", tier).Uint32("uid", p.uid).Msg("migrate: already on the tier; nothing queued")
	writeJSON(w, http.StatusOK, JobResponse{Path: rel, To: tier, State: JobDone, Finished: true, Already: true, BytesDone: size, BytesTotal: size})
	return true
}
