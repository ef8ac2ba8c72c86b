"""HuleEdu Results: assessment results from the services that make them to the teachers who wait for them."""
