"""The tracking front end, a base layer every stage uses: streamed video reading, mediapipe's Face Landmarker
(kept off the network), the shared face crop, filters over time, head pose, mediapipe <-> template correspondence."""
